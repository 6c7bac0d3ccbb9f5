import { App } from 'aws-cdk-lib';
import { InferenceBatchStack } from './stack';

const app = new App();
new InferenceBatchStack(app, 'InferenceBatchExample');
app.synth();
