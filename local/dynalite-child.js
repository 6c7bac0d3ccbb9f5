// Runs dynalite as a separate process and reports its port to the parent over IPC.
if (process.env.DYNALITE_RETURN_OLD_ITEM === 'true') require('./dynalite-patch')();
const dynalite = require('dynalite');
const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
process.on('disconnect', () => process.exit(0));
