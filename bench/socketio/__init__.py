"""Socket.IO 4 comparison harness: the Node server (server.js), its load client and publisher."""
