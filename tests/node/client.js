// Google's Node.js Cloud Tasks client on its default transport (gRPC) against the emulator.
// Usage: node client.js HOST PORT PROJECT LOCATION; prints one JSON line of what it saw.
'use strict';
const {CloudTasksClient} = require('@google-cloud/tasks');
const {credentials} = require('@grpc/grpc-js');

async function main() {
  const [host, port, project, location] = process.argv.slice(2);
  const client = new CloudTasksClient({servicePath: host, port: Number(port), sslCreds: credentials.createInsecure()});
  const parent = client.locationPath(project, location);
  const queueName = client.queuePath(project, location, 'node-queue');
  const out = {};
  try {
    const [queue] = await client.createQueue({parent, queue: {name: queueName, rateLimits: {maxDispatchesPerSecond: 3}}});
    out.queue = {name: queue.name, rate: queue.rateLimits.maxDispatchesPerSecond, state: queue.state};
    const [task] = await client.createTask({
      parent: queueName,
      task: {
        name: `${queueName}/tasks/from-node`,
        httpRequest: {url: 'http://127.0.0.1:9/hook', httpMethod: 'PUT', body: Buffer.from('hello from node'), headers: {'X-From': 'node'}},
      },
      responseView: 'FULL',
    });
    out.task = {name: task.name, body: Buffer.from(task.httpRequest.body).toString(), method: task.httpRequest.httpMethod};
    const [tasks] = await client.listTasks({parent: queueName});
    out.listed = tasks.map((t) => t.name);
    try {
      await client.createTask({parent: queueName, task: {name: `${queueName}/tasks/from-node`, httpRequest: {url: 'http://127.0.0.1:9/'}}});
    } catch (err) {
      out.duplicate = {code: err.code, details: err.details};
    }
    try {
      await client.getQueue({name: client.queuePath(project, location, 'missing')});
    } catch (err) {
      out.missing = {code: err.code, details: err.details};
    }
    const [policy] = await client.getIamPolicy({resource: queueName});
    out.etag = Buffer.from(policy.etag).toString('base64');
    const [paused] = await client.pauseQueue({name: queueName});
    out.paused = paused.state;
  } finally {
    await client.close();
  }
  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
