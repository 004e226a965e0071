// simplehl7_server.js PORT - a peer for the daemon benchmark: simple-hl7's
// MLLP server answering each message with its ACK (parse + ACK, nothing
// stored), as its README shows. NODE_PATH points at the scratch folder
// bench_daemon.sh installed it into.
const net = require('net');
const hl7 = require('simple-hl7');

// simple-hl7 listens on every address: keep it on loopback.
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (port) {
  return listen.call(this, port, '127.0.0.1');
};

const app = hl7.tcp();
app.use(function (req, res, next) {
  res.end();
});
app.use(function (err, req, res, next) {
  if (res) res.end();
});
app.start(parseInt(process.argv[2], 10));
