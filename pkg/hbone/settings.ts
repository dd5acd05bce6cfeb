/**
 * HBONE's numbers, each with its reason. Windows, frame size and pool limits are ztunnel's defaults
 * (`src/config.rs`, ARCHITECTURE.md); the Node-specific ones come from PERFORMANCE.md measurements.
 */
import type { Settings } from 'node:http2';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Per-stream receive window: one tunnel can have 4 MiB in flight (a 10 ms RTT at ~3 Gbit/s). */
export const STREAM_WINDOW_SIZE = 4 * MiB;
/**
 * Per-connection receive window. HTTP/2 SETTINGS cannot set it; Node leaves it at 64 KiB unless
 * `session.setLocalWindowSize()` is called, which cost ~35% throughput on loopback (PERFORMANCE.md).
 */
export const CONNECTION_WINDOW_SIZE = 16 * MiB;
/** Largest DATA frame we accept: fewer frames (and fewer JS callbacks) per megabyte. */
export const MAX_FRAME_SIZE = 1 * MiB;
/** Header list limit for CONNECT requests: a handful of short headers; ztunnel's server allows 64 KiB. */
export const MAX_HEADER_LIST_SIZE = 64 * KiB;
/**
 * Streams a peer may open on one server connection. Clients open at most POOL_MAX_STREAMS_PER_CONNECTION;
 * ztunnel's server allows 200 (hyper's default), which leaves room for other clients' pools.
 */
export const SERVER_MAX_CONCURRENT_STREAMS = 200;
/**
 * Node refuses new streams (ENHANCE_YOUR_CALM) once a session's tracked memory passes this many MiB
 * (default 10). One connection may buffer a full connection window inbound plus queued writes of many
 * streams, so allow several windows.
 */
export const MAX_SESSION_MEMORY_MIB = 4 * (CONNECTION_WINDOW_SIZE / MiB);

/** ztunnel: at most 100 tunnels share one pooled connection; the next one opens a new connection. */
export const POOL_MAX_STREAMS_PER_CONNECTION = 100;
/** ztunnel `pool_unused_release_timeout`: a pooled connection with no streams for 5 min is closed. */
export const POOL_IDLE_TIMEOUT_MS = 5 * 60_000;
/** ztunnel `do_ping_pong`: PING every 10 s … */
export const PING_INTERVAL_MS = 10_000;
/** … and drop the connection when one is not answered within 20 s. */
export const PING_TIMEOUT_MS = 20_000;
/** TCP connect + TLS handshake budget for a new pooled connection. */
export const CONNECT_TIMEOUT_MS = 10_000;

/** A client that has not finished its TLS handshake by then is cut (slowloris on :15008). */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * A server connection with no open stream for this long is closed (GOAWAY). Longer than the client pool's
 * idle release so that, normally, the client closes first and never races a new stream against our GOAWAY.
 */
export const SERVER_IDLE_TIMEOUT_MS = 10 * 60_000;

/**
 * SETTINGS both ends send; `maxConcurrentStreams` only on the server (it limits streams the *peer* opens).
 * Push is meaningless for tunnels.
 */
export function localSettings(maxConcurrentStreams: number | null): Settings {
  const s: Settings = {
    initialWindowSize: STREAM_WINDOW_SIZE,
    maxFrameSize: MAX_FRAME_SIZE,
    maxHeaderListSize: MAX_HEADER_LIST_SIZE,
    enablePush: false,
  };
  if (maxConcurrentStreams !== null) s.maxConcurrentStreams = maxConcurrentStreams;
  return s;
}
