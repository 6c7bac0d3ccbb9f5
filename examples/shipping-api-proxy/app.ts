import { App } from 'aws-cdk-lib';
import { ShippingApiProxyStack } from './stack';

const app = new App();
new ShippingApiProxyStack(app, 'ShippingApiProxyExample');
app.synth();
