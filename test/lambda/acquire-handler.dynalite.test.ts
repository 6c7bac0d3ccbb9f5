import { acquireHandlerSuite } from './acquire-handler.suite';

// Stock dynalite: a failed condition returns no old item, so the handler's GetItem fallback runs.
acquireHandlerSuite('stock dynalite', { returnOldItemOnConditionFailure: false });
