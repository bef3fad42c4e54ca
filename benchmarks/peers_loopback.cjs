// Preloaded into Portkey's gateway by the load harness (node --require): a server that
// listens without naming a host would bind every interface; this binds it to 127.0.0.1.
"use strict";
const net = require("net");
const listen = net.Server.prototype.listen;
const LOOPBACK = "127.0.0.1";

net.Server.prototype.listen = function (...args) {
  const first = args[0];
  if (first !== null && typeof first === "object" && !Array.isArray(first)) {
    if (first.path === undefined && first.fd === undefined && first.handle === undefined &&
        !first.host) {
      args[0] = Object.assign({}, first, { host: LOOPBACK });
    }
  } else if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    if (typeof args[1] !== "string") {
      args.splice(1, 0, LOOPBACK);
    }
  }
  return listen.apply(this, args);
};
