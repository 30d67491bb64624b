// The HTTP/2 layer under HBONE: protocol rules checked frame by frame with a hand-driven peer, and
// flow control checked against Node's own HTTP/2 implementation (nghttp2) as the other end.
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer as createH2cServer, type ServerHttp2Session, type ServerHttp2Stream } from "node:http2";
import { type AddressInfo, connect, createServer as createNetServer, type Socket } from "node:net";
import { after, describe, it } from "node:test";
import { FramePeer, rawClient, startH2Server } from "../../test/frame-peer.js";
import { TunnelStream } from "../tunnel-stream.js";
import { type H2Stream, Http2Connection } from "./connection.js";
import { frame as frameBytes, H2_ERROR, type H2Settings } from "./frames.js";

const DATA = 0x0;
const HEADERS = 0x1;
const RST_STREAM = 0x3;
const SETTINGS = 0x4;
const PUSH_PROMISE = 0x5;
const PING = 0x6;
const WINDOW_UPDATE = 0x8;
const CONTINUATION = 0x9;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;

const CONNECT: [string, string][] = [
  [":method", "CONNECT"],
  [":authority", "10.0.0.1:80"],
];

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** The sum of WINDOW_UPDATE increments received so far for `streamId`. */
function credited(peer: FramePeer, streamId: number): number {
  return peer.frames
    .filter((f) => f.type === WINDOW_UPDATE && f.streamId === streamId)
    .reduce((sum, f) => sum + f.payload.readUInt32BE(0), 0);
}

/** Client options with HTTP/2's default window and frame sizes. */
const DEFAULT_CLIENT = {
  role: "client",
  streamWindow: 65_535,
  connectionWindow: 65_535,
  maxFrameSize: 16_384,
  maxHeaderListSize: 16_384,
} as const;

const fakeIdentity = { toString: () => "spiffe://test/ns/a/sa/b" } as never;

describe("HTTP/2 connection: protocol rules", () => {
  const cleanup: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of cleanup) await c();
  });
  async function server(options: Parameters<typeof startH2Server>[0] = {}, onStream?: (s: H2Stream) => void) {
    const srv = await startH2Server(options, onStream);
    cleanup.push(srv.close);
    return srv;
  }
  /**
   * A server and a raw client that opened stream 1 with a CONNECT. With `peerSettings`, the client
   * first waits until the server acknowledged them.
   */
  async function openStream(peerSettings?: Partial<H2Settings>, flags = END_HEADERS) {
    const srv = await server();
    const peer = await rawClient(srv.port, peerSettings);
    if (peerSettings !== undefined)
      await peer.take((f) => f.type === SETTINGS && f.flags === 1, "SETTINGS ACK");
    peer.headers(1, CONNECT, flags);
    await waitFor(() => srv.streams.length === 1, "the stream");
    return { srv, peer, stream: (srv.streams[0] as { stream: H2Stream }).stream };
  }

  it("answers SETTINGS with an ACK and PING with the same payload", async () => {
    const srv = await server();
    const peer = await rawClient(srv.port);
    await peer.take((f) => f.type === SETTINGS && f.flags === 0, "server SETTINGS");
    await peer.take((f) => f.type === SETTINGS && f.flags === 1, "SETTINGS ACK");
    peer.send(PING, 0, 0, Buffer.from("12345678"));
    const pong = await peer.take((f) => f.type === PING, "PING ACK");
    assert.equal(pong.flags, 1);
    assert.equal(pong.payload.toString(), "12345678");
    peer.socket.destroy();
  });

  const connectionErrors: [string, (peer: FramePeer) => void, number][] = [
    [
      "a bad preface",
      (p) => p.sendRaw(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n")),
      H2_ERROR.PROTOCOL_ERROR,
    ],
    [
      "a first frame other than SETTINGS",
      (p) => p.send(PING, 0, 0, Buffer.alloc(8)),
      H2_ERROR.PROTOCOL_ERROR,
    ],
    [
      "a frame over the size limit",
      (p) => p.send(DATA, 0, 1, Buffer.alloc(16_385)),
      H2_ERROR.FRAME_SIZE_ERROR,
    ],
    ["DATA on stream 0", (p) => p.send(DATA, 0, 0, Buffer.alloc(1)), H2_ERROR.PROTOCOL_ERROR],
    ["DATA on an idle stream", (p) => p.send(DATA, 0, 5, Buffer.alloc(1)), H2_ERROR.PROTOCOL_ERROR],
    ["RST_STREAM on an idle stream", (p) => p.send(RST_STREAM, 0, 7, u32(8)), H2_ERROR.PROTOCOL_ERROR],
    ["an even stream id", (p) => p.headers(2, CONNECT), H2_ERROR.PROTOCOL_ERROR],
    ["PUSH_PROMISE", (p) => p.send(PUSH_PROMISE, END_HEADERS, 1, Buffer.alloc(4)), H2_ERROR.PROTOCOL_ERROR],
    [
      "a WINDOW_UPDATE of 0 on the connection",
      (p) => p.send(WINDOW_UPDATE, 0, 0, u32(0)),
      H2_ERROR.PROTOCOL_ERROR,
    ],
    [
      "a connection window overflow",
      (p) => p.send(WINDOW_UPDATE, 0, 0, u32(0x7fffffff)),
      H2_ERROR.FLOW_CONTROL_ERROR,
    ],
    [
      "a SETTINGS frame of bad length",
      (p) => p.send(SETTINGS, 0, 0, Buffer.alloc(5)),
      H2_ERROR.FRAME_SIZE_ERROR,
    ],
    [
      "an invalid HPACK block",
      (p) => p.send(HEADERS, END_HEADERS, 1, Buffer.from([0xbf])),
      H2_ERROR.COMPRESSION_ERROR,
    ],
    [
      "a header block interrupted by another frame",
      (p) => {
        p.send(HEADERS, 0, 1, Buffer.from([0x82]));
        p.send(PING, 0, 0, Buffer.alloc(8));
      },
      H2_ERROR.PROTOCOL_ERROR,
    ],
  ];
  for (const [what, send, code] of connectionErrors) {
    it(`answers ${what} with GOAWAY and closes`, async () => {
      const srv = await server();
      const socket = connect(srv.port, "127.0.0.1");
      await once(socket, "connect");
      const peer = new FramePeer(socket);
      if (what !== "a bad preface" && what !== "a first frame other than SETTINGS") peer.greet();
      else if (what === "a first frame other than SETTINGS")
        peer.sendRaw(Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
      send(peer);
      assert.equal(await peer.goawayCode(), code);
      await peer.waitClosed();
      assert.equal(srv.connections[0]?.destroyed, true);
    });
  }

  it("accepts a header block split over CONTINUATION frames, and stops a CONTINUATION flood", async () => {
    const srv = await server();
    const peer = await rawClient(srv.port);
    const block = Buffer.from(
      // encodeHeaders output for CONNECT 10.0.0.1:80, split into three fragments
      (await import("./hpack.js")).encodeHeaders(CONNECT),
    );
    peer.send(HEADERS, 0, 1, block.subarray(0, 3));
    peer.send(CONTINUATION, 0, 1, block.subarray(3, 6));
    peer.send(CONTINUATION, END_HEADERS, 1, block.subarray(6));
    await waitFor(() => srv.streams.length === 1, "the stream");
    assert.equal(srv.streams[0]?.headers[":authority"], "10.0.0.1:80");
    peer.send(HEADERS, 0, 3, block.subarray(0, 3));
    for (let i = 0; i < 300; i++) peer.send(CONTINUATION, 0, 3, Buffer.alloc(0));
    assert.equal(await peer.goawayCode(), H2_ERROR.ENHANCE_YOUR_CALM);
  });

  it("holds a header block in one HEADERS frame to the limit CONTINUATION frames have", async () => {
    // Header list limit 16 KiB: a block may take 4 x 16 KiB + 16 KiB = 80 KiB, in any number of frames.
    const srv = await server({ maxFrameSize: 1 << 20, maxHeaderListSize: 16_384 });
    const limit = 4 * 16_384 + 16_384;
    // Literals with incremental indexing of `:authority` with an empty value, two octets each.
    const literals = (bytes: number) => Buffer.alloc(bytes, Buffer.from([0x41, 0x00]));
    const peer = await rawClient(srv.port);
    // At the limit: decoded, and the list (too large) reaches the application as such (431).
    peer.send(HEADERS, END_HEADERS, 1, literals(limit));
    await waitFor(() => srv.streams.length === 1, "the stream");
    assert.equal(srv.streams[0]?.tooLarge, true);
    // Beyond it: the connection ends, as it does for a block of CONTINUATION frames.
    peer.send(HEADERS, END_HEADERS, 3, literals(limit + 2));
    assert.equal(await peer.goawayCode(), H2_ERROR.ENHANCE_YOUR_CALM);
    await peer.waitClosed();
    assert.equal(srv.streams.length, 1, "the oversized block opened no stream");
    const split = await rawClient(srv.port);
    split.send(HEADERS, 0, 1, literals(limit - 16_384));
    split.send(CONTINUATION, END_HEADERS, 1, literals(16_386));
    assert.equal(await split.goawayCode(), H2_ERROR.ENHANCE_YOUR_CALM);
    await split.waitClosed();
  });

  it("resets a stream whose DATA exceeds the stream window, and keeps the connection", async () => {
    const srv = await server({ maxFrameSize: 1 << 20, connectionWindow: 1 << 20 });
    const peer = await rawClient(srv.port, { maxFrameSize: 1 << 20 });
    peer.headers(1, CONNECT);
    await peer.take((f) => f.type === SETTINGS && f.flags === 0, "server SETTINGS");
    peer.send(SETTINGS, 1, 0);
    peer.send(DATA, 0, 1, Buffer.alloc(65_536));
    assert.equal(await peer.rstCode(1), H2_ERROR.FLOW_CONTROL_ERROR);
    peer.headers(3, CONNECT);
    await waitFor(() => srv.streams.length === 2, "a second stream on the same connection");
    peer.socket.destroy();
  });

  it("closes the connection when DATA exceeds the connection window", async () => {
    const srv = await server({ streamWindow: 1 << 20, maxFrameSize: 1 << 20 });
    const peer = await rawClient(srv.port);
    peer.headers(1, CONNECT);
    peer.headers(3, CONNECT);
    peer.send(DATA, 0, 1, Buffer.alloc(40_000));
    peer.send(DATA, 0, 3, Buffer.alloc(40_000));
    assert.equal(await peer.goawayCode(), H2_ERROR.FLOW_CONTROL_ERROR);
  });

  it("delivers padded DATA without the padding and credits the padding back", async () => {
    const received: Buffer[] = [];
    const srv = await server({}, (s) =>
      s.attach({
        _h2Data: (c) => {
          received.push(Buffer.from(c));
          s.consume(c.length);
        },
        _h2End: () => {},
        _h2Closed: () => {},
      }),
    );
    const peer = await rawClient(srv.port);
    peer.headers(1, CONNECT);
    // Three 16,000-byte frames: pad length octet, 15,800 data bytes, 199 padding bytes each.
    const payload = Buffer.concat([Buffer.from([199]), Buffer.alloc(15_800, 7), Buffer.alloc(199)]);
    for (let i = 0; i < 3; i++) peer.send(DATA, PADDED, 1, payload);
    peer.send(DATA, 0, 1, Buffer.alloc(0)); // an empty frame changes nothing
    await waitFor(() => Buffer.concat(received).length === 47_400, "the data bytes");
    assert.ok(Buffer.concat(received).every((b) => b === 7));
    // Window comes back for data and padding alike: the quarter-window mark (16,383) is crossed by
    // the second frame's data, after 2 × 15,800 consumed plus the first frame's 200 of padding
    // (without the padding it would be 31,600); the rest stays below the next mark.
    await waitFor(() => credited(peer, 1) === 31_800, "WINDOW_UPDATE counting the padding");
    peer.send(DATA, PADDED | END_STREAM, 3, Buffer.from([0])); // stream 3 is idle
    assert.equal(await peer.goawayCode(), H2_ERROR.PROTOCOL_ERROR);
  });

  it("gives window back only as the reader consumes, in quarter-window steps", async () => {
    let stream: H2Stream | undefined;
    const pending: Buffer[] = [];
    const srv = await server({ streamWindow: 65_535, connectionWindow: 1 << 20 }, (s) => {
      stream = s;
      s.attach({ _h2Data: (c) => pending.push(c), _h2End: () => {}, _h2Closed: () => {} });
    });
    const peer = await rawClient(srv.port);
    peer.headers(1, CONNECT);
    for (let i = 0; i < 4; i++) peer.send(DATA, 0, 1, Buffer.alloc(16_000));
    await waitFor(() => pending.length === 4, "four frames");
    assert.equal(credited(peer, 1), 0, "nothing credited while unread");
    (stream as H2Stream).consume(16_000);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(credited(peer, 1), 0, "below a quarter of the window");
    (stream as H2Stream).consume(32_000);
    await waitFor(() => credited(peer, 1) === 48_000, "a WINDOW_UPDATE of 48,000");
    peer.socket.destroy();
  });

  /** Opens stream 1 against a server whose windows may grow, and sends `first` bytes of DATA. */
  async function probedStream(consume: boolean) {
    let stream: H2Stream | undefined;
    const srv = await server(
      {
        streamWindow: 65_535,
        connectionWindow: 65_535,
        maxStreamWindow: 262_144,
        maxConnectionWindow: 1 << 20,
      },
      (s) => {
        stream = s;
        s.attach({ _h2Data: (c) => consume && s.consume(c.length), _h2End: () => {}, _h2Closed: () => {} });
      },
    );
    const peer = await rawClient(srv.port);
    peer.headers(1, CONNECT);
    // A quarter of the window arrives: the server starts a window probe (a PING).
    peer.send(DATA, 0, 1, Buffer.alloc(16_384));
    const ping = await peer.take((f) => f.type === PING && (f.flags & 1) === 0, "the window probe");
    // Most of the window arrives within the probe's round trip, then the ACK.
    for (let i = 0; i < 3; i++) peer.send(DATA, 0, 1, Buffer.alloc(16_000));
    peer.send(PING, 1, 0, ping.payload);
    return { peer, stream: () => stream as H2Stream };
  }
  const grants = (peer: FramePeer, streamId: number) =>
    peer.frames
      .filter((f) => f.type === WINDOW_UPDATE && f.streamId === streamId)
      .map((f) => f.payload.readUInt32BE(0));

  it("grows the windows when a probe shows the window, not the reader, limits the sender", async () => {
    const { peer, stream } = await probedStream(true);
    // 48,000 bytes in one round trip is over 2/3 of the 65,535 window: both windows grow to twice
    // that, 96,000 (the stream's ceiling is 262,144), by a WINDOW_UPDATE of the difference.
    await waitFor(() => stream().window === 96_000, "the stream window grown to 96,000");
    await waitFor(() => grants(peer, 1).includes(96_000 - 65_535), "a stream WINDOW_UPDATE of the growth");
    await waitFor(
      () => grants(peer, 0).includes(96_000 - 65_535),
      "a connection WINDOW_UPDATE of the growth",
    );
    // The grown window is usable: a frame that would have overrun 65,535 is accepted.
    const before = credited(peer, 1);
    peer.send(DATA, 0, 1, Buffer.alloc(16_000));
    peer.send(DATA, 0, 1, Buffer.alloc(16_000));
    await waitFor(() => credited(peer, 1) > before, "window given back for the new data");
    assert.equal(stream().closed, false);
    peer.socket.destroy();
  });

  it("does not grow the window of a reader that lags behind", async () => {
    const { peer, stream } = await probedStream(false);
    // The same data and round trip, but nothing was consumed: the reader, not the window, is the limit.
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(stream().window, 65_535);
    assert.deepEqual(grants(peer, 1), []);
    assert.deepEqual(grants(peer, 0), []);
    // The sender is held to the windows it had: one byte beyond 65,535 ends the connection.
    peer.send(DATA, 0, 1, Buffer.alloc(65_535 - 64_384 + 1));
    assert.equal(await peer.goawayCode(), H2_ERROR.FLOW_CONTROL_ERROR);
  });

  it("waits for window before sending, and resumes on WINDOW_UPDATE and SETTINGS", async () => {
    const { peer, stream: s } = await openStream({ initialWindowSize: 1000 });
    s.respond([[":status", "200"]], false);
    let written = false;
    s.write(Buffer.alloc(5000, 1), () => {
      written = true;
    });
    const dataBytes = () =>
      peer.frames
        .filter((f) => f.type === DATA && f.streamId === 1)
        .reduce((n, f) => n + f.payload.length, 0);
    await waitFor(() => dataBytes() === 1000, "the first 1000 bytes");
    assert.equal(written, false);
    peer.send(WINDOW_UPDATE, 0, 1, u32(1500));
    await waitFor(() => dataBytes() === 2500, "1500 more after WINDOW_UPDATE");
    peer.send(SETTINGS, 0, 0, Buffer.from([0, 4, 0, 0, 0x0b, 0xb8])); // initial window 3000: +2000
    await waitFor(() => dataBytes() === 4500, "2000 more after SETTINGS");
    peer.send(WINDOW_UPDATE, 0, 1, u32(500));
    await waitFor(() => written, "the write callback");
    assert.equal(dataBytes(), 5000);
    peer.socket.destroy();
  });

  it("a reset while the writer waits for window reaches the tunnel as ERR_HBONE_RESET", async () => {
    const { peer, stream } = await openStream({ initialWindowSize: 1000 });
    stream.respond([[":status", "200"]], false);
    const tunnel = new TunnelStream(stream, {
      authority: "10.0.0.1:80",
      peerIdentity: fakeIdentity,
      headers: {},
    });
    const failed = new Promise<Error>((resolve) => tunnel.once("error", resolve));
    tunnel.write(Buffer.alloc(300_000));
    await peer.take((f) => f.type === DATA, "the first DATA");
    peer.send(RST_STREAM, 0, 1, u32(H2_ERROR.CANCEL));
    const err = (await failed) as Error & { code?: string; rstCode?: number };
    assert.equal(err.code, "ERR_HBONE_RESET");
    assert.equal(err.rstCode, H2_ERROR.CANCEL);
    peer.socket.destroy();
  });

  it("a request that ends with its headers reaches the tunnel as EOF, and the reply still flows", async () => {
    const { peer, stream } = await openStream(undefined, END_HEADERS | END_STREAM);
    // Attached only after the END_STREAM arrived, as InboundTunnel.accept() does.
    await new Promise((r) => setTimeout(r, 10));
    stream.respond([[":status", "200"]], false);
    const tunnel = new TunnelStream(stream, {
      authority: "10.0.0.1:80",
      peerIdentity: fakeIdentity,
      headers: {},
    });
    tunnel.resume();
    await once(tunnel, "end");
    tunnel.end("bye");
    const data = await peer.take((f) => f.type === DATA && f.payload.length > 0, "the reply");
    assert.equal(data.payload.toString(), "bye");
    await peer.take((f) => f.type === DATA && (f.flags & END_STREAM) !== 0, "END_STREAM");
    await waitFor(() => stream.closed, "the stream closed");
    peer.socket.destroy();
  });

  it(
    "cuts off a peer that keeps sending PINGs but never reads the replies",
    { timeout: 60_000 },
    async () => {
      const srv = await server();
      const peer = await rawClient(srv.port);
      peer.socket.pause();
      const batch = Buffer.concat(
        Array.from({ length: 10_000 }, () => frameBytes(PING, 0, 0, Buffer.alloc(8))),
      );
      let sent = 0;
      // Bounded: 3 million PINGs (51 MB) at most; the kernel buffers take a few MB before replies queue up.
      while (sent < 3_000_000 && !peer.socket.destroyed && !srv.connections[0]?.destroyed) {
        if (!peer.socket.write(batch))
          await Promise.race([once(peer.socket, "drain"), once(peer.socket, "close")]);
        sent += 10_000;
      }
      await waitFor(() => srv.connections[0]?.destroyed === true, "the server to give up", 10_000);
      assert.match(String(srv.connections[0]?.failure?.message), /ENHANCE_YOUR_CALM/);
      peer.socket.destroy();
    },
  );

  it("refuses streams beyond MAX_CONCURRENT_STREAMS with REFUSED_STREAM", async () => {
    const srv = await server({ maxConcurrentStreams: 2 });
    const peer = await rawClient(srv.port);
    peer.headers(1, CONNECT);
    peer.headers(3, CONNECT);
    peer.headers(5, CONNECT);
    assert.equal(await peer.rstCode(5), H2_ERROR.REFUSED_STREAM);
    assert.equal(srv.streams.length, 2);
    peer.socket.destroy();
  });

  it("resets malformed requests with PROTOCOL_ERROR", async () => {
    const srv = await server();
    const peer = await rawClient(srv.port);
    const bad: [string, string][][] = [
      [[":method", "CONNECT"]], // no :authority
      [...CONNECT, [":path", "/"]], // CONNECT with :path
      [
        [":method", "GET"],
        [":authority", "x"],
      ], // GET without :scheme and :path
      [...CONNECT, ["Upper", "x"]], // upper-case name
      [...CONNECT, ["connection", "close"]], // connection-specific field
      [...CONNECT, ["x", "a\nb"]], // LF in a value
      [["x", "1"], ...CONNECT], // pseudo-header after a regular one
      [...CONNECT, [":authority", "10.0.0.2:80"]], // repeated pseudo-header
      [
        [":method", "CONNECT"],
        [":authority", "a b:80"],
      ], // space in the authority
    ];
    let id = 1;
    for (const fields of bad) {
      peer.headers(id, fields);
      assert.equal(await peer.rstCode(id), H2_ERROR.PROTOCOL_ERROR, JSON.stringify(fields));
      id += 2;
    }
    assert.equal(srv.streams.filter((s) => !s.stream.closed).length, 0);
    peer.socket.destroy();
  });

  it("stops a client that resets streams as fast as it opens them (rapid reset)", async () => {
    const srv = await server({ maxConcurrentStreams: 100 });
    const peer = await rawClient(srv.port);
    let id = 1;
    for (let i = 0; i < 1500; i++) {
      peer.headers(id, CONNECT);
      peer.send(RST_STREAM, 0, id, u32(H2_ERROR.CANCEL));
      id += 2;
    }
    assert.equal(await peer.goawayCode(), H2_ERROR.ENHANCE_YOUR_CALM);
    assert.ok(srv.streams.length > 900, `${srv.streams.length} streams opened before the cut-off`);
  });

  it("takes resets of streams it has answered as ordinary aborts, at any rate", async () => {
    // A tunnel whose client went away is reset once it is established (the 200 sent): a busy pair of
    // proxies does that hundreds of times a second, and none of those streams cost the server work the
    // client did not wait for, so they draw nothing from the reset budget.
    const srv = await server({ maxConcurrentStreams: 100 }, (stream) =>
      stream.respond([[":status", "200"]], false),
    );
    const peer = await rawClient(srv.port);
    let id = 1;
    for (let i = 0; i < 3000; i++) {
      peer.headers(id, CONNECT);
      peer.send(RST_STREAM, 0, id, u32(H2_ERROR.CANCEL));
      id += 2;
    }
    peer.send(PING, 0, 0, Buffer.from("stillup!"));
    await peer.take((f) => f.type === PING && f.flags === 1, "the PING ACK after 3000 aborted streams");
    assert.equal(srv.streams.length, 3000);
    assert.deepEqual(
      peer.frames.filter((f) => f.type === 0x7),
      [],
      "no GOAWAY",
    );
    assert.equal(srv.connections[0]?.destroyed, false);
    peer.socket.destroy();
  });

  it("stops a client that makes the server reset stream after stream (MadeYouReset)", async () => {
    // Each WINDOW_UPDATE of 0 on an open stream makes the server reset it (a stream error): the
    // stream was handed to the application first, and the reset frees its slot at once, so this
    // is the rapid-reset loop with the resets sent by the server.
    const srv = await server({ maxConcurrentStreams: 100 });
    const peer = await rawClient(srv.port);
    let id = 1;
    for (let i = 0; i < 1500; i++) {
      peer.headers(id, CONNECT);
      peer.send(WINDOW_UPDATE, 0, id, u32(0));
      id += 2;
    }
    assert.equal(await peer.goawayCode(), H2_ERROR.ENHANCE_YOUR_CALM);
    assert.ok(srv.streams.length > 900, `${srv.streams.length} streams opened before the cut-off`);
    assert.ok(srv.streams.length < 1500, `${srv.streams.length} streams opened: no cut-off`);
  });

  it("drains gracefully: GOAWAY first, open streams finish, new ones are refused", async () => {
    const { srv, peer, stream } = await openStream();
    const conn = srv.connections[0] as Http2Connection;
    conn.close();
    const goaway = await peer.take((f) => f.type === 0x7, "GOAWAY");
    assert.equal(goaway.payload.readUInt32BE(0), 1, "last stream id");
    assert.equal(goaway.payload.readUInt32BE(4), H2_ERROR.NO_ERROR);
    peer.headers(3, CONNECT);
    assert.equal(await peer.rstCode(3), H2_ERROR.REFUSED_STREAM);
    assert.equal(conn.destroyed, false, "stream 1 is still open");
    stream.respond([[":status", "200"]], true);
    peer.send(DATA, END_STREAM, 1, Buffer.alloc(0));
    await peer.waitClosed();
    assert.equal(conn.destroyed, true);
  });
});

describe("HTTP/2 connection: client side against a hand-driven server", () => {
  async function clientAgainstRawServer() {
    const server = createNetServer();
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const accepted = once(server, "connection");
    const socket = connect((server.address() as AddressInfo).port, "127.0.0.1");
    await once(socket, "connect");
    const [serverSocket] = (await accepted) as [Socket];
    const peer = new FramePeer(serverSocket, { expectPreface: true });
    peer.send(SETTINGS, 0, 0, Buffer.alloc(0));
    const conn = new Http2Connection(socket, DEFAULT_CLIENT);
    return { server, peer, conn };
  }

  it("GOAWAY refuses the streams above its last id and keeps the others", async () => {
    const { server, peer, conn } = await clientAgainstRawServer();
    const streams = [conn.request(CONNECT), conn.request(CONNECT), conn.request(CONNECT)];
    await peer.take((f) => f.type === HEADERS && f.streamId === 5, "the third request");
    const goaway = Buffer.alloc(8);
    goaway.writeUInt32BE(3, 0);
    peer.send(0x7, 0, 0, goaway);
    await waitFor(() => streams[2]?.closed === true, "stream 5 refused");
    assert.equal(streams[2]?.rstCode, H2_ERROR.REFUSED_STREAM);
    assert.equal(streams[0]?.closed, false);
    assert.equal(streams[1]?.closed, false);
    assert.throws(() => conn.request(CONNECT), { code: "ERR_HBONE_CONNECTION" });
    // The remaining streams finish normally, then the connection closes by itself.
    for (const id of [1, 3]) {
      peer.headers(id, [[":status", "200"]], END_HEADERS | END_STREAM);
      streams[(id - 1) / 2]?.end();
    }
    await once(conn, "close");
    assert.equal(conn.failure, undefined);
    server.close();
  });

  it("answers PUSH_PROMISE and a response without :status with errors", async () => {
    const { server, peer, conn } = await clientAgainstRawServer();
    const stream = conn.request(CONNECT);
    await peer.take((f) => f.type === HEADERS && f.streamId === 1, "the request");
    peer.headers(1, [["x", "1"]]); // no :status: malformed
    assert.equal(await peer.rstCode(1), H2_ERROR.PROTOCOL_ERROR);
    assert.equal(stream.closed, true);
    conn.request(CONNECT);
    peer.send(PUSH_PROMISE, END_HEADERS, 3, Buffer.from([0, 0, 0, 2]));
    assert.equal(await peer.goawayCode(), H2_ERROR.PROTOCOL_ERROR);
    await once(conn, "close");
    assert.equal(conn.failure?.code, "ERR_HBONE_PROTOCOL");
    assert.equal(conn.failure?.goawayCode, H2_ERROR.PROTOCOL_ERROR, "the code of the GOAWAY sent");
    server.close();
  });

  it("resets a stream whose DATA comes before its response HEADERS, after a 1xx too", async () => {
    const { server, peer, conn } = await clientAgainstRawServer();
    const first = conn.request(CONNECT);
    let responded = false;
    first.onResponse = () => {
      responded = true;
    };
    await peer.take((f) => f.type === HEADERS && f.streamId === 1, "the request");
    peer.send(DATA, 0, 1, Buffer.from("early"));
    assert.equal(await peer.rstCode(1), H2_ERROR.PROTOCOL_ERROR);
    assert.equal(first.closed, true);
    const second = conn.request(CONNECT);
    await peer.take((f) => f.type === HEADERS && f.streamId === 3, "the second request");
    peer.headers(3, [[":status", "100"]]);
    peer.send(DATA, 0, 3, Buffer.from("early"));
    assert.equal(await peer.rstCode(3), H2_ERROR.PROTOCOL_ERROR);
    assert.equal(second.closed, true);
    assert.equal(responded, false);
    // A stream error: the connection goes on.
    const third = conn.request(CONNECT);
    await peer.take((f) => f.type === HEADERS && f.streamId === 5, "the third request");
    const response = new Promise<Record<string, unknown>>((resolve) => {
      third.onResponse = (h) => resolve(h);
    });
    peer.headers(5, [[":status", "200"]]);
    assert.equal((await response)[":status"], "200");
    assert.equal(conn.failure, undefined);
    conn.destroy();
    server.close();
  });

  it("accepts a response with padding, priority and CONTINUATION", async () => {
    const { server, peer, conn } = await clientAgainstRawServer();
    const stream = conn.request(CONNECT);
    const response = new Promise<Record<string, unknown>>((resolve) => {
      stream.onResponse = (h) => resolve(h);
    });
    await peer.take((f) => f.type === HEADERS && f.streamId === 1, "the request");
    const block = (await import("./hpack.js")).encodeHeaders([
      [":status", "200"],
      ["x-long", "v".repeat(100)],
    ]);
    // HEADERS with PADDED (3 bytes) and PRIORITY (5 bytes), the rest of the block in CONTINUATION.
    const first = Buffer.concat([Buffer.from([3]), Buffer.alloc(5), block.subarray(0, 10), Buffer.alloc(3)]);
    peer.send(HEADERS, 0x8 | 0x20, 1, first);
    peer.send(CONTINUATION, END_HEADERS, 1, block.subarray(10));
    const headers = await response;
    assert.equal(headers[":status"], "200");
    assert.equal(headers["x-long"], "v".repeat(100));
    conn.destroy();
    server.close();
  });
});

describe("HTTP/2 connection: random frames", () => {
  it("survives 300 connections of random frames: each ends in GOAWAY or keeps working, nothing throws", async () => {
    const srv = await startH2Server({ maxFrameSize: 16_384 }, (s) =>
      s.attach({
        _h2Data: (c) => s.consume(c.length),
        _h2End: () => s.respond([[":status", "200"]], true),
        _h2Closed: () => {},
      }),
    );
    // A small deterministic generator, so a failure can be replayed.
    let seed = 0x2545f491;
    const rand = (n: number) => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const valid = Buffer.from((await import("./hpack.js")).encodeHeaders(CONNECT));
    let goaways = 0;
    for (let i = 0; i < 300; i++) {
      const peer = await rawClient(srv.port);
      const frames = 1 + rand(12);
      for (let f = 0; f < frames; f++) {
        const type = rand(12);
        const payload =
          type === HEADERS && rand(2) === 0
            ? valid
            : Buffer.from(Array.from({ length: rand(3) === 0 ? rand(300) : rand(16) }, () => rand(256)));
        peer.send(type, rand(256), rand(4) === 0 ? 0 : 1 + 2 * rand(4), payload);
      }
      await new Promise((r) => setTimeout(r, 2));
      if (peer.frames.some((f) => f.type === 0x7)) goaways++;
      peer.socket.destroy();
    }
    await waitFor(() => srv.connections.every((c) => c.destroyed), "every connection closed");
    assert.ok(goaways > 50, `${goaways} connections ended with GOAWAY`);
    // The server still serves a well-formed client.
    const peer = await rawClient(srv.port);
    peer.headers(1, CONNECT, END_HEADERS | END_STREAM);
    const response = await peer.take((f) => f.type === HEADERS && f.streamId === 1, "a response");
    assert.equal(response.flags & END_STREAM, END_STREAM);
    peer.socket.destroy();
    await srv.close();
  });
});

describe("HTTP/2 connection: against Node's HTTP/2 (nghttp2)", () => {
  it("moves 8 MiB each way through a CONNECT stream with a slow reader, within the windows", async () => {
    const h2 = createH2cServer({ settings: { initialWindowSize: 65_535 } });
    const serverBytes = { read: 0 };
    h2.on("stream", (stream: ServerHttp2Stream, headers) => {
      assert.equal(headers[":method"], "CONNECT");
      stream.respond({ ":status": 200 });
      // Echo, honouring back-pressure.
      stream.on("data", (c: Buffer) => {
        serverBytes.read += c.length;
        if (!stream.write(c)) stream.pause();
      });
      stream.on("drain", () => stream.resume());
      stream.on("end", () => stream.end());
    });
    await new Promise<void>((r) => h2.listen(0, "127.0.0.1", r));
    const socket = connect((h2.address() as AddressInfo).port, "127.0.0.1");
    await once(socket, "connect");
    const conn = new Http2Connection(socket, DEFAULT_CLIENT);
    const h2stream = conn.request(CONNECT);
    const response = await new Promise<Record<string, unknown>>((resolve) => {
      h2stream.onResponse = (headers) => resolve(headers);
    });
    assert.equal(response[":status"], "200");
    const tunnel = new TunnelStream(h2stream, {
      authority: "10.0.0.1:80",
      peerIdentity: fakeIdentity,
      headers: {},
    });
    const total = 8 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 0xab);
    let received = 0;
    const done = new Promise<void>((resolve, reject) => {
      tunnel.on("error", reject);
      tunnel.on("end", resolve);
    });
    // Read slowly at first: the echo must stall instead of buffering 8 MiB anywhere.
    tunnel.pause();
    const writer = (async () => {
      for (let sent = 0; sent < total; sent += chunk.length) {
        if (!tunnel.write(chunk)) await once(tunnel, "drain");
      }
      tunnel.end();
    })();
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(serverBytes.read < 2 * 1024 * 1024, `the echo stalled (${serverBytes.read} bytes read)`);
    tunnel.on("data", (c: Buffer) => {
      received += c.length;
    });
    tunnel.resume();
    await writer;
    await done;
    assert.equal(received, total);
    assert.equal(serverBytes.read, total);
    conn.close();
    await once(conn, "close");
    await new Promise<void>((r) => h2.close(() => r()));
  });

  /**
   * Opens a tunnel to a Node HTTP/2 server, which then sends GOAWAY `code` naming the tunnel's stream
   * as processed (so the stream is not refused), and closes the connection under the open tunnel.
   * Resolves with the error the tunnel ends with.
   */
  async function tunnelEndedByGoaway(code: number): Promise<Error & Record<string, unknown>> {
    const h2 = createH2cServer();
    const sessions: ServerHttp2Session[] = [];
    h2.on("session", (s: ServerHttp2Session) => sessions.push(s));
    const opened = new Promise<ServerHttp2Stream>((resolve) =>
      h2.on("stream", (stream: ServerHttp2Stream) => {
        stream.on("error", () => {});
        stream.respond({ ":status": 200 });
        resolve(stream);
      }),
    );
    await new Promise<void>((r) => h2.listen(0, "127.0.0.1", r));
    const socket = connect((h2.address() as AddressInfo).port, "127.0.0.1");
    await once(socket, "connect");
    const conn = new Http2Connection(socket, DEFAULT_CLIENT);
    const h2stream = conn.request(CONNECT);
    await new Promise<void>((resolve) => {
      h2stream.onResponse = () => resolve();
    });
    const tunnel = new TunnelStream(h2stream, {
      authority: "10.0.0.1:80",
      peerIdentity: fakeIdentity,
      headers: {},
    });
    const failed = new Promise<Error>((resolve) => tunnel.once("error", resolve));
    tunnel.resume();
    const serverStream = await opened;
    const session = sessions[0] as ServerHttp2Session;
    session.goaway(code, serverStream.id);
    // A PING answered after the GOAWAY: the client has read it before the connection goes.
    await new Promise<void>((resolve, reject) => session.ping((err) => (err ? reject(err) : resolve())));
    session.destroy();
    const err = (await failed) as Error & Record<string, unknown>;
    if (!conn.destroyed) await once(conn, "close");
    await new Promise<void>((r) => h2.close(() => r()));
    return err;
  }

  it("a GOAWAY with an error code ends the open tunnel with an error carrying that code", async () => {
    const err = await tunnelEndedByGoaway(H2_ERROR.PROTOCOL_ERROR);
    assert.equal(err.code, "ERR_HBONE_CONNECTION");
    assert.equal(err.goawayCode, H2_ERROR.PROTOCOL_ERROR);
    assert.match(err.message, /PROTOCOL_ERROR/);
  });

  it("a GOAWAY with NO_ERROR gives the tunnel that loses its connection no GOAWAY code", async () => {
    const err = await tunnelEndedByGoaway(H2_ERROR.NO_ERROR);
    assert.equal(err.code, "ERR_HBONE_CONNECTION");
    assert.equal(err.goawayCode, undefined);
  });
});

async function waitFor(predicate: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
