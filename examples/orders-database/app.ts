import { App } from 'aws-cdk-lib';
import { OrdersDatabaseStack } from './stack';

const app = new App();
new OrdersDatabaseStack(app, 'OrdersDatabase');
app.synth();
