// The Node.js baseline of bench/run.sh: Node's own `cluster` module preforking N workers that
// answer the same `Hello World\n` (text/plain) on 127.0.0.1:PORT — what flora-cluster replaces.
//   PORT=8080 WORKERS=2 node bench/node-hello.js
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

const port = Number(process.env.PORT || 1337);
const workers = Number(process.env.WORKERS || 2);

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  const stop = () => {
    for (const w of Object.values(cluster.workers)) w.kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  http
    .createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end('Hello World\n');
    })
    .listen(port, '127.0.0.1');
}
