/**
 * The plugin's real I/O: an HTTP client over the agent's unix socket and a log file. Logs never go to
 * stdout (that carries the CNI result); they are appended as JSON lines to `<cni_agent_run_dir>/plugin.log`
 * (node-local, readable by an operator on the node) and warnings and errors also go to stderr, which the
 * runtime records.
 */
import { appendFileSync, renameSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import type { AgentClient, AgentResponse, PluginConfig, PluginLog } from './cni.ts';

/** Rotate the plugin log at this size (one previous file kept): the node must not fill up. */
const LOG_MAX_BYTES = 5 * 1024 * 1024;
const LEVEL_ORDER = { debug: 10, info: 20, warn: 30, error: 40 } as const;
/** Largest agent reply we read; replies are a few dozen bytes. */
const MAX_REPLY_BYTES = 64 * 1024;

/**
 * Parses one HTTP/1.1 response read to EOF (`Connection: close`): status and body, de-chunked if needed.
 * A hand-written client because importing node:http costs ~45 ms of start-up per pod; node:net ~5 ms.
 */
export function parseHttpResponse(raw: Buffer): { status: number; body: string } {
  const text = raw.toString('latin1');
  const headEnd = text.indexOf('\r\n\r\n');
  if (headEnd === -1) throw new Error('truncated HTTP response from the agent');
  const head = text.slice(0, headEnd).split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '');
  if (!m) throw new Error(`bad HTTP status line from the agent: ${JSON.stringify(head[0])}`);
  let body = raw.subarray(Buffer.byteLength(text.slice(0, headEnd + 4), 'latin1'));
  if (head.some((h) => /^transfer-encoding:\s*chunked/i.test(h))) {
    const parts: Buffer[] = [];
    let pos = 0;
    for (;;) {
      const lineEnd = body.indexOf('\r\n', pos);
      if (lineEnd === -1) break;
      const size = Number.parseInt(body.subarray(pos, lineEnd).toString('latin1'), 16);
      if (!Number.isFinite(size) || size === 0) break;
      parts.push(body.subarray(lineEnd + 2, lineEnd + 2 + size));
      pos = lineEnd + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  }
  return { status: Number(m[1]), body: body.toString('utf8') };
}

export const httpAgentClient: AgentClient = {
  post(socket: string, path: string, body: unknown, timeoutMs: number): Promise<AgentResponse> {
    return new Promise<AgentResponse>((resolve, reject) => {
      const payload = Buffer.from(JSON.stringify(body));
      const chunks: Buffer[] = [];
      let size = 0;
      const conn = connect({ path: socket });
      conn.setTimeout(timeoutMs, () =>
        conn.destroy(new Error(`no answer from the agent within ${timeoutMs} ms`)),
      );
      conn.on('connect', () => {
        // No half-close (end()): Node's HTTP server would close its side before a slow answer is written.
        // `connection: close` makes the agent close after replying, which ends the read loop below.
        conn.write(
          `POST ${path} HTTP/1.1\r\nhost: istio-cni\r\ncontent-type: application/json\r\n` +
            `content-length: ${payload.length}\r\nconnection: close\r\n\r\n`,
        );
        conn.write(payload);
      });
      conn.on('data', (d: Buffer) => {
        size += d.length;
        if (size > MAX_REPLY_BYTES) conn.destroy(new Error('agent reply too large'));
        else chunks.push(d);
      });
      conn.on('error', reject);
      conn.on('close', (hadError) => {
        if (hadError) return;
        try {
          const res = parseHttpResponse(Buffer.concat(chunks));
          let parsed: unknown = null;
          try {
            parsed = res.body ? JSON.parse(res.body) : null;
          } catch {
            parsed = { error: res.body.slice(0, 200) };
          }
          resolve({ status: res.status, body: parsed });
        } catch (err) {
          reject(err);
        }
      });
    });
  },
};

/** A log sink writing JSON lines to a file (best effort) and warn/error also to stderr. */
export function fileLog(config: PluginConfig | null, fields: Record<string, unknown>): PluginLog {
  const file = config ? `${config.agentRunDir}/plugin.log` : null;
  const min = LEVEL_ORDER[config?.logLevel ?? 'info'];
  return {
    log(level, extra, msg) {
      if (LEVEL_ORDER[level] < min) return;
      const line = `${JSON.stringify({ time: new Date().toISOString(), level, component: 'istio-cni-plugin', ...fields, ...extra, msg })}\n`;
      if (LEVEL_ORDER[level] >= LEVEL_ORDER.warn) process.stderr.write(line);
      if (!file) return;
      try {
        try {
          if (statSync(file).size > LOG_MAX_BYTES) renameSync(file, `${file}.1`);
        } catch {
          // no log file yet
        }
        appendFileSync(file, line, { mode: 0o640 });
      } catch {
        // The run dir may not exist (agent not installed yet): stderr has the important lines.
      }
    },
  };
}
