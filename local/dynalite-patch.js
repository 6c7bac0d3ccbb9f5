// dynalite ignores ReturnValuesOnConditionCheckFailure. DynamoDB, asked for ALL_OLD, returns the item that
// failed the condition with the ConditionalCheckFailedException; this makes dynalite do the same, so local
// runs see the call counts DynamoDB would give. Idempotent; affects every dynalite server in the process.
module.exports = function returnOldItemOnConditionFailure() {
  const db = require('dynalite/db');
  if (db.checkConditional.__returnsOldItem) return;
  // dynalite drops request fields it does not know: teach the three conditional writes this one.
  for (const action of ['updateItem', 'putItem', 'deleteItem']) {
    require(`dynalite/validations/${action}`).types.ReturnValuesOnConditionCheckFailure = { type: 'String', enum: ['ALL_OLD', 'NONE'] };
  }
  const original = db.checkConditional;
  const patched = function (data, existingItem) {
    const err = original(data, existingItem);
    if (err && err.body && data && data.ReturnValuesOnConditionCheckFailure === 'ALL_OLD' && existingItem) {
      err.body.Item = existingItem;
    }
    return err;
  };
  patched.__returnsOldItem = true;
  db.checkConditional = patched;
};
