import { App } from 'aws-cdk-lib';
import { ShippingApiStack } from './stack';

const app = new App();
new ShippingApiStack(app, 'ShippingApiExample');
app.synth();
