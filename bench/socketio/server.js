"use strict";
/*
 * Socket.IO 4 counterpart of Parley's streaming path, for bench/sio_run.py.
 *
 *   PORT=3000 JWT_SECRET=... [REDIS_URL=redis://127.0.0.1:6379/0 SIO_PREFIX=bench-sio-ab12] node server.js
 *
 * - Clients connect to namespace "/" with handshake auth {token, discussion}; io.use() verifies the
 *   HS256 JWT with `jsonwebtoken` (same secret and claims as bench/common.py sign()) and the
 *   connection handler joins room `discussion:<id>`.
 * - connectionStateRecovery is on: every event carries its offset, and a client reconnecting with
 *   {pid, offset} within SIO_RECOVERY_MS gets the packets it missed (socket.recovered === true).
 *   Middlewares run again on recovery (skipMiddlewares: false), as Parley re-checks the token on
 *   every resume.
 * - With REDIS_URL: @socket.io/redis-streams-adapter on node-redis v4, stream `<SIO_PREFIX>:stream`
 *   trimmed to ~SIO_MAXLEN entries, sessions under `<SIO_PREFIX>:session:`. The stream and the
 *   sessions live in Redis, so recovery also works across a restart of this process. Without
 *   REDIS_URL: the default in-memory (session-aware) adapter.
 * - HTTP on the same port: POST /publish {"discussion": "...", "body": "..."} emits
 *   "response_posted" to the room and answers 201 {"seq": n}; GET /readyz; GET /stats; POST /gc
 *   (a full V8 collection, when node runs with --expose-gc).
 * - SIGTERM: io.close() (every socket is disconnected with "server shutting down", a recoverable
 *   reason, so its session is persisted), then the Redis client is quit (QUIT is queued after the
 *   session SETs, so they reach Redis), then exit.
 */

const http = require("node:http");
const { Server } = require("socket.io");
const jwt = require("jsonwebtoken");

const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOST || "127.0.0.1";
const SECRET = process.env.JWT_SECRET;
const REDIS_URL = process.env.REDIS_URL || "";
const PREFIX = process.env.SIO_PREFIX || "sio";
const MAXLEN = Number(process.env.SIO_MAXLEN || 100000);
const RECOVERY_MS = Number(process.env.SIO_RECOVERY_MS || 120000);
const PING_INTERVAL_MS = Number(process.env.SIO_PING_INTERVAL_MS || 25000);
const PING_TIMEOUT_MS = Number(process.env.SIO_PING_TIMEOUT_MS || 20000);

if (!SECRET) {
  console.error("JWT_SECRET is required");
  process.exit(2);
}

let ready = false;
let redisClient = null;
const seqByRoom = new Map();

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

// Same shape as Parley's event envelope (type, discussion, user, payload.response), so the bytes on
// the wire per event are of the same order.
function envelope(discussion, body, seq) {
  return {
    type: "response_posted",
    discussion_id: discussion,
    user: { id: "bench-publisher", name: "bench-publisher" },
    payload: {
      response: {
        id: String(seq),
        discussion_id: discussion,
        body,
        created_at: new Date().toISOString(),
      },
    },
    seq,
  };
}

const httpServer = http.createServer((req, res) => {
  if (req.method === "POST" && req.url === "/publish") {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      let message;
      try {
        message = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        return send(res, 400, { error: "invalid json" });
      }
      if (typeof message.discussion !== "string" || typeof message.body !== "string") {
        return send(res, 422, { error: "discussion and body are required" });
      }
      const room = "discussion:" + message.discussion;
      const seq = (seqByRoom.get(room) || 0) + 1;
      seqByRoom.set(room, seq);
      io.to(room).emit("response_posted", envelope(message.discussion, message.body, seq));
      send(res, 201, { seq });
    });
    return;
  }
  if (req.method === "GET" && req.url === "/readyz") {
    return send(res, ready ? 200 : 503, { ready });
  }
  if (req.method === "POST" && req.url === "/gc") {
    // Only with `node --expose-gc` (sio_run.py starts it so): lets the idle workload sample RSS
    // after a full collection as well as without one.
    if (typeof global.gc !== "function") return send(res, 501, { error: "start node with --expose-gc" });
    global.gc();
    const memory = process.memoryUsage();
    return send(res, 200, { heapUsed: memory.heapUsed, external: memory.external, rss: memory.rss });
  }
  if (req.method === "GET" && req.url === "/stats") {
    return send(res, 200, { clients: io.engine.clientsCount, sockets: io.of("/").sockets.size, pid: process.pid });
  }
  send(res, 404, { error: "not found" });
});
httpServer.keepAliveTimeout = 120000;

const io = new Server(httpServer, {
  pingInterval: PING_INTERVAL_MS,
  pingTimeout: PING_TIMEOUT_MS,
  connectionStateRecovery: {
    maxDisconnectionDuration: RECOVERY_MS,
    skipMiddlewares: false,
  },
});

io.use((socket, next) => {
  const auth = socket.handshake.auth || {};
  const token = auth.token;
  const discussion = auth.discussion;
  if (typeof token !== "string" || typeof discussion !== "string" || !discussion) {
    return next(new Error("token and discussion are required"));
  }
  jwt.verify(token, SECRET, { algorithms: ["HS256"] }, (err, claims) => {
    if (err || !claims || typeof claims.sub !== "string") {
      return next(new Error("invalid token"));
    }
    socket.data.user = { id: claims.sub, name: claims.name || claims.sub };
    socket.data.discussion = discussion;
    next();
  });
});

io.on("connection", (socket) => {
  // A recovered socket already has its rooms back; join() is idempotent anyway.
  socket.join("discussion:" + socket.data.discussion);
});

async function main() {
  if (REDIS_URL) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-streams-adapter");
    redisClient = createClient({ url: REDIS_URL });
    redisClient.on("error", (err) => console.error("redis:", err.message));
    await redisClient.connect();
    io.adapter(
      createAdapter(redisClient, {
        streamName: PREFIX + ":stream",
        channelPrefix: PREFIX + ":ch",
        sessionKeyPrefix: PREFIX + ":session:",
        maxLen: MAXLEN,
      }),
    );
  }
  await new Promise((resolve) => httpServer.listen(PORT, HOST, resolve));
  ready = true;
  console.log(
    `socket.io ${require("socket.io/package.json").version} pid ${process.pid} on ${HOST}:${PORT}, adapter ${
      REDIS_URL ? "redis-streams " + PREFIX + ":stream" : "in-memory"
    }`,
  );
}

let stopping = false;
async function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  ready = false;
  const hardStop = setTimeout(() => process.exit(1), 10000);
  hardStop.unref();
  const sockets = io.of("/").sockets.size;
  // Do not wait for httpServer.close(): keep-alive publisher connections may hold it open.
  io.close().catch(() => {});
  if (redisClient) {
    try {
      await redisClient.quit(); // after the session SETs queued by the disconnects above
    } catch (err) {
      console.error("redis quit:", err.message);
    }
  }
  console.log(`${signal}: closed ${sockets} sockets`);
  process.exit(0);
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
