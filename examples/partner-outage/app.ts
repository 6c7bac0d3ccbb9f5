import { App } from 'aws-cdk-lib';
import { PartnerOutageStack } from './stack';

const app = new App();
new PartnerOutageStack(app, 'PartnerOutageExample');
app.synth();
