// The webhook receiver: checks a delivery, answers 202 at once, then does the task and
// sends .started and .finished to the control plane.

import http from "node:http";
import { randomUUID } from "node:crypto";
import { CloudEvent, HTTP } from "cloudevents";
import { verify } from "./signature.js";
import { checkNumber } from "./checknumber.js";

export const TASK = "checknumber";
export const TRIGGERED = `sh.keptn.event.${TASK}.triggered`;
export const MAX_BODY_BYTES = 1024 * 1024;
const SEEN_LIMIT = 10_000;

/**
 * key: the HMAC key (see signature.js); sendEvent({headers, body}) posts one answer;
 * paths: where deliveries are accepted.
 */
export function createService({ key, serviceName, sendEvent, log = console.error, paths = ["/events"] }) {
  // Delivery is at least once: a retried delivery keeps its webhook-id. Answering it again
  // would count as a second executor, so remember the ids (the oldest are forgotten first).
  const seen = new Set();
  const pending = new Set(); // tasks in progress, awaited on shutdown

  function firstTime(webhookId) {
    if (seen.has(webhookId)) return false;
    seen.add(webhookId);
    if (seen.size > SEEN_LIMIT) seen.delete(seen.values().next().value);
    return true;
  }

  async function handle(req, res) {
    const { pathname } = new URL(req.url, "http://localhost");
    if (pathname === "/health" && req.method === "GET") return reply(res, 200, "ok");
    if (!paths.includes(pathname)) return reply(res, 404, "not found");
    if (req.method !== "POST") return reply(res, 405, "use POST", { allow: "POST" });

    const body = await readBody(req, MAX_BODY_BYTES);
    if (body === null) {
      // Stop reading: close the connection instead of draining a huge body.
      reply(res, 413, `body larger than ${MAX_BODY_BYTES} bytes`, { connection: "close" });
      res.on("finish", () => req.destroy());
      return;
    }

    const refused = verify(key, req.headers, body);
    if (refused) return reply(res, 401, refused);

    let event;
    try {
      event = HTTP.toEvent({ headers: forCloudEvents(req.headers), body: body.toString("utf8") });
    } catch (err) {
      return reply(res, 400, `not a CloudEvent: ${err.message}`);
    }
    if (Array.isArray(event)) return reply(res, 400, "batches are not supported");
    if (event.type !== TRIGGERED) return reply(res, 202, `ignored: ${event.type}`);
    if (!event.id || typeof event.data !== "object" || event.data === null) {
      return reply(res, 400, "a task event needs an id and a JSON object as data");
    }
    if (!firstTime(req.headers["webhook-id"])) return reply(res, 202, "duplicate");

    // The control plane waits only a few seconds for this answer: work afterwards.
    reply(res, 202, "accepted");
    const job = work(event).finally(() => pending.delete(job));
    pending.add(job);
  }

  async function work(triggered) {
    const { project, stage, service } = triggered.data;
    const scope = { project, stage, service };
    try {
      await sendEvent(answer(triggered, "started", scope));
    } catch (err) {
      // A .finished without its .started would never complete the task: send neither.
      log(`${triggered.id}: .started not sent, giving up: ${err.message}`);
      return;
    }

    let outcome;
    try {
      outcome = await checkNumber(triggered.data[TASK]);
    } catch (err) {
      outcome = { status: "errored", result: "fail", message: `checknumber failed: ${err.message}` };
    }
    try {
      await sendEvent(answer(triggered, "finished", { ...scope, ...outcome }));
      log(`${triggered.id}: finished ${outcome.status}/${outcome.result}`);
    } catch (err) {
      log(`${triggered.id}: .finished not sent: ${err.message}`);
    }
  }

  function answer(triggered, phase, data) {
    const event = new CloudEvent({
      specversion: "1.0",
      id: randomUUID(),
      source: serviceName,
      type: `sh.keptn.event.${TASK}.${phase}`,
      time: new Date().toISOString(),
      datacontenttype: "application/json",
      ...(triggered.shkeptncontext ? { shkeptncontext: triggered.shkeptncontext } : {}),
      triggeredid: triggered.id,
      shkeptnspecversion: "0.2.4",
      data,
    });
    return HTTP.structured(event);
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err) => {
      log(`${req.method} ${req.url}: ${err.stack ?? err}`);
      if (!res.headersSent) reply(res, 500, "internal error");
      else res.destroy();
    });
  });

  return {
    server,
    /** Resolves when every accepted delivery has been answered (or given up). */
    idle: () => Promise.allSettled([...pending]),
  };
}

function reply(res, status, text, headers = {}) {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", ...headers });
  res.end(`${text}\n`);
}

/** The raw body as a Buffer, or null when it is larger than limit. */
function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    if (Number(req.headers["content-length"]) > limit) return resolve(null);
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > limit) {
        req.pause();
        resolve(null);
      } else {
        chunks.push(chunk);
      }
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

// Prepare the headers for the cloudevents SDK, which leaves two things to us:
// - it picks its parser by the exact content type, so "application/cloudevents+json;
//   charset=utf-8" would be refused: drop the parameters;
// - binary mode percent-encodes ce-* header values (space, '"', '%', non-ASCII), as the
//   CloudEvents HTTP binding says, but the SDK does not decode them.
function forCloudEvents(headers) {
  const clean = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name === "content-type") clean[name] = value.split(";")[0].trim().toLowerCase();
    else if (name.startsWith("ce-")) clean[name] = percentDecode(value);
    else clean[name] = value;
  }
  return clean;
}

function percentDecode(value) {
  try {
    return decodeURIComponent(value);
  } catch {
    return value; // not valid percent-encoding: take it as it is
  }
}
