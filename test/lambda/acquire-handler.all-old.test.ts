import { acquireHandlerSuite } from './acquire-handler.suite';

// dynalite with DynamoDB's ReturnValuesOnConditionCheckFailure: a failed condition returns the old item.
acquireHandlerSuite('dynalite returning ALL_OLD', { returnOldItemOnConditionFailure: true });
