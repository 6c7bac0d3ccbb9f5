import { App } from 'aws-cdk-lib';
import { FanOutStack } from './stack';

const app = new App();
new FanOutStack(app, 'FanOutExample');
app.synth();
