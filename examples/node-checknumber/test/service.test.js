// HTTP-level tests: the real entry point (index.js) in a child process, and a fake
// control-plane API in this process that records what the service sends it.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { secretKey, sign } from "../lib/signature.js";

const SECRET = "whsec_" + Buffer.from("a test secret of 32 bytes length").toString("base64");
const INDEX = new URL("../index.js", import.meta.url).pathname;

/** A fake API: `routes["METHOD /path"]` answers [status, json]; every request is recorded. */
async function fakeApi(routes = {}) {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const text = Buffer.concat(chunks).toString();
    const record = { method: req.method, path: req.url, headers: req.headers, body: text ? JSON.parse(text) : null };
    requests.push(record);
    const route = routes[`${req.method} ${req.url}`];
    const [status, json] = typeof route === "function" ? route(record) : route ?? [200, {}];
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(json));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** Start index.js; resolves once it printed its ready line. */
async function startService(env) {
  const child = spawn(process.execPath, [INDEX], {
    env: { PATH: process.env.PATH, PORT: "0", WEBHOOK_SECRET: SECRET, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const lines = createInterface({ input: child.stdout });
  const ready = new Promise((resolve, reject) => {
    lines.on("line", (line) => {
      const match = /^checknumber-node listening on (\S+) \(integration (\S+)\)$/.exec(line);
      if (match) resolve({ url: match[1], integration: match[2] });
    });
    child.on("exit", (code) => reject(new Error(`exited with ${code}: ${stderr}`)));
    setTimeout(() => reject(new Error(`not ready after 10 s: ${stderr}`)), 10_000).unref();
  });
  const { url, integration } = await ready;
  return {
    url,
    integration,
    stderr: () => stderr,
    async stop() {
      child.kill("SIGTERM");
      const [code] = await once(child, "exit");
      return code;
    },
  };
}

async function until(condition, what, ms = 5_000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function triggered(number) {
  return {
    specversion: "1.0",
    id: randomUUID(),
    source: "shipyard-controller",
    type: "sh.keptn.event.checknumber.triggered",
    time: new Date().toISOString(),
    datacontenttype: "application/json",
    shkeptnspecversion: "0.2.4",
    shkeptncontext: randomUUID(),
    data: {
      project: "seed",
      stage: "dev",
      service: "phone",
      checknumber: { number },
      temporaryData: { distributor: { subscriptionID: "sub-1" } },
    },
  };
}

/** POST an event the way the control plane does, signed unless told otherwise. */
async function deliver(url, event, { mode = "structured", webhookId, secret = SECRET, body: rawBody } = {}) {
  let headers;
  let body;
  if (mode === "structured") {
    headers = { "content-type": "application/cloudevents+json" };
    body = JSON.stringify(event);
  } else {
    const { data, ...attributes } = event;
    headers = { "content-type": "application/json" };
    for (const [name, value] of Object.entries(attributes)) {
      // percent-encoded as the control plane does (CloudEvents HTTP binding)
      if (name !== "datacontenttype") headers[`ce-${name}`] = value.replace(/[^\x21-\x7e]|["%]/gu, encodeURIComponent);
    }
    body = JSON.stringify(data);
  }
  body = rawBody ?? body;
  const id = webhookId ?? `${event.id}.sub-1`;
  const timestamp = String(Math.floor(Date.now() / 1000));
  headers["webhook-id"] = id;
  headers["webhook-timestamp"] = timestamp;
  headers["webhook-signature"] = `v1,${sign(secretKey(secret), id, timestamp, body)}`;
  const res = await fetch(url, { method: "POST", headers, body });
  return { status: res.status, text: (await res.text()).trim() };
}

function checkAnswer(answer, event, phase) {
  assert.match(answer.headers["content-type"], /^application\/cloudevents\+json(;|$)/);
  const body = answer.body;
  assert.equal(body.specversion, "1.0");
  assert.match(body.id, /^[0-9a-f-]{36}$/);
  assert.notEqual(body.id, event.id);
  assert.equal(body.source, "checknumber-node-test");
  assert.equal(body.type, `sh.keptn.event.checknumber.${phase}`);
  assert.equal(body.datacontenttype, "application/json");
  assert.equal(body.shkeptnspecversion, "0.2.4");
  assert.equal(body.shkeptncontext, event.shkeptncontext);
  assert.equal(body.triggeredid, event.id);
  assert.ok(!Number.isNaN(Date.parse(body.time)));
  assert.equal(answer.headers["x-token"], "t0ken");
}

describe("a service that does not register", () => {
  let api;
  let service;
  const answers = () => api.requests.filter((r) => r.path === "/api/v1/event");
  let failNext = 1; // the first answer gets a 503, to show that answers are retried

  before(async () => {
    api = await fakeApi({
      "POST /api/v1/event": () => (failNext-- > 0 ? [503, { code: 503, message: "busy" }] : [200, { keptnContext: "x" }]),
    });
    service = await startService({
      CONTROLPLANE_API_URL: api.url,
      CONTROLPLANE_API_TOKEN: "t0ken",
      REGISTER: "0",
      SERVICE_NAME: "checknumber-node-test",
    });
  });
  after(async () => {
    assert.equal(await service.stop(), 0);
    await api.close();
  });

  test("serves /health", async () => {
    const base = service.url.replace(/\/events$/, "");
    const res = await fetch(`${base}/health`);
    assert.equal(res.status, 200);
    assert.equal((await res.text()).trim(), "ok");
    assert.equal(service.integration, "none");
  });

  for (const mode of ["structured", "binary"]) {
    test(`answers a signed ${mode} delivery with .started, then .finished`, async () => {
      const event = triggered("+41 44 668 18 00");
      // an odd context survives the percent-encoding of binary mode
      if (mode === "binary") event.shkeptncontext = `${randomUUID()} 100% "odd" é`;
      const before = answers().filter((a) => a.headers["content-type"]).length;
      assert.deepEqual(await deliver(service.url, event, { mode }), { status: 202, text: "accepted" });
      const mine = () => answers().filter((a) => a.body?.triggeredid === event.id);
      await until(() => mine().filter((a) => a.body.type.endsWith(".finished")).length === 1, ".finished");
      assert.ok(answers().length > before);

      // Only the accepted attempts count: a 503 is retried with the same event.
      const sent = mine();
      const started = sent.filter((a) => a.body.type.endsWith(".started"));
      const finished = sent.filter((a) => a.body.type.endsWith(".finished"));
      assert.equal(new Set(started.map((a) => a.body.id)).size, 1);
      assert.ok(sent.indexOf(started.at(-1)) < sent.indexOf(finished[0]), ".started comes first");

      checkAnswer(started[0], event, "started");
      assert.deepEqual(started[0].body.data, { project: "seed", stage: "dev", service: "phone" });
      checkAnswer(finished[0], event, "finished");
      assert.notEqual(finished[0].body.id, started[0].body.id);
      assert.deepEqual(finished[0].body.data, {
        project: "seed",
        stage: "dev",
        service: "phone",
        status: "succeeded",
        result: "pass",
        message: "+41 44 668 18 00 is a valid fixed line number in CH",
        checknumber: {
          number: "+41 44 668 18 00",
          valid: true,
          possible: true,
          e164: "+41446681800",
          international: "+41 44 668 18 00",
          country: "CH",
          countryCallingCode: 41,
          region: "Zurich",
          carrier: null,
          numberType: "FIXED_LINE",
          timeZones: ["Europe/Zurich"],
        },
      });
    });
  }

  test("the first answer was retried after a 503", () => {
    const statuses = answers().slice(0, 2).map((a) => a.body.id);
    assert.equal(statuses[0], statuses[1]);
  });

  test("an invalid number finishes with result fail", async () => {
    const event = triggered("garbage");
    assert.equal((await deliver(service.url, event)).status, 202);
    const finished = () => answers().find((a) => a.body?.triggeredid === event.id && a.body.type.endsWith(".finished"));
    await until(finished, ".finished");
    const data = finished().body.data;
    assert.equal(data.status, "succeeded");
    assert.equal(data.result, "fail");
    assert.match(data.message, /garbage/);
    assert.equal(data.checknumber.valid, false);
  });

  test("refuses a bad signature with 401 and sends nothing", async () => {
    const count = answers().length;
    const event = triggered("+41 44 668 18 00");
    const wrong = await deliver(service.url, event, { secret: "another secret of enough length" });
    assert.equal(wrong.status, 401);
    assert.match(wrong.text, /signature/);
    // signed for one body, sent with another
    const res = await fetch(service.url, {
      method: "POST",
      headers: {
        "content-type": "application/cloudevents+json",
        "webhook-id": "x",
        "webhook-timestamp": String(Math.floor(Date.now() / 1000)),
        "webhook-signature": `v1,${sign(secretKey(SECRET), "x", String(Math.floor(Date.now() / 1000)), "{}")}`,
      },
      body: JSON.stringify(event),
    });
    assert.equal(res.status, 401);
    const unsigned = await fetch(service.url, { method: "POST", body: JSON.stringify(event) });
    assert.equal(unsigned.status, 401);
    await sleep(200);
    assert.equal(answers().length, count);
  });

  test("answers a repeated webhook-id only once", async () => {
    const event = triggered("+41 79 123 45 67");
    assert.deepEqual(await deliver(service.url, event), { status: 202, text: "accepted" });
    assert.deepEqual(await deliver(service.url, event), { status: 202, text: "duplicate" });
    const mine = () => answers().filter((a) => a.body?.triggeredid === event.id);
    await until(() => mine().length === 2, "two answers");
    await sleep(200);
    assert.deepEqual(
      mine().map((a) => a.body.type),
      ["sh.keptn.event.checknumber.started", "sh.keptn.event.checknumber.finished"],
    );
    assert.equal(mine()[1].body.data.checknumber.carrier, "Swisscom");
  });

  test("ignores other event types, refuses bodies that are not CloudEvents", async () => {
    const other = { ...triggered("1"), type: "sh.keptn.event.deployment.triggered" };
    assert.deepEqual(await deliver(service.url, other), {
      status: 202,
      text: "ignored: sh.keptn.event.deployment.triggered",
    });
    const garbage = await deliver(service.url, triggered("1"), { body: "not json" });
    assert.equal(garbage.status, 400);
  });

  test("refuses a body over 1 MiB with 413", async () => {
    const res = await fetch(service.url, {
      method: "POST",
      headers: { "content-type": "application/cloudevents+json" },
      body: "x".repeat(1024 * 1024 + 1),
    });
    assert.equal(res.status, 413);
  });

  test("unknown paths are 404, GET /events is 405", async () => {
    const base = service.url.replace(/\/events$/, "");
    assert.equal((await fetch(`${base}/nope`)).status, 404);
    assert.equal((await fetch(service.url)).status, 405);
  });
});

test("registers, pings, and registers again when the registration is gone", async () => {
  const registration = "/api/controlPlane/v1/uniform/registration";
  let registrations = 0;
  let pings = 0;
  const api = await fakeApi({
    // the first registration is new, the second finds the id known (as after a restart)
    [`POST ${registration}`]: () => (++registrations === 1 ? [201, { id: "int-1" }] : [200, { id: "int-1" }]),
    // the second ping says the registration has expired
    [`PUT ${registration}/int-1/ping`]: () => (++pings === 2 ? [404, { code: 404, message: "gone" }] : [200, {}]),
    [`GET ${registration}/int-1/subscription`]: [
      200,
      [
        {
          id: "sub-9",
          event: "sh.keptn.event.checknumber.triggered",
          filter: { projects: ["edited"], stages: [], services: [] },
          webhook: { url: "http://127.0.0.1:1/events", mode: "structured" },
        },
      ],
    ],
  });
  const service = await startService({
    CONTROLPLANE_API_URL: api.url,
    PROJECTS: "seed, other",
    STAGES: "dev",
    WEBHOOK_MODE: "binary",
    PING_INTERVAL_MS: "50",
    NAMESPACE: "ns",
  });
  try {
    assert.equal(service.integration, "int-1");
    const first = api.requests[0];
    assert.equal(first.method, "POST");
    assert.equal(first.path, registration);
    assert.equal(first.headers["x-token"], undefined);
    assert.equal(first.body.name, "checknumber-node");
    assert.equal(first.body.metadata.location, "remote-execution-plane");
    assert.equal(first.body.metadata.integrationversion, "1.0.0");
    assert.equal(first.body.metadata.kubernetesmetadata.namespace, "ns");
    assert.ok(first.body.metadata.hostname);
    assert.deepEqual(first.body.subscriptions, [
      {
        event: "sh.keptn.event.checknumber.triggered",
        filter: { projects: ["seed", "other"], stages: ["dev"], services: [] },
        webhook: { url: service.url, mode: "binary", secret: SECRET },
      },
    ]);

    // After the 404 it registers again; the id is known, so it points the kept
    // subscription at its current URL and secret, keeping the edited filter.
    const put = () => api.requests.find((r) => r.method === "PUT" && r.path.endsWith("/subscription/sub-9"));
    await until(put, "the subscription update");
    assert.equal(registrations, 2);
    assert.deepEqual(put().body, {
      event: "sh.keptn.event.checknumber.triggered",
      filter: { projects: ["edited"], stages: [], services: [] },
      webhook: { url: service.url, mode: "binary", secret: SECRET },
    });
    await until(() => pings >= 4, "pings after registering again");
  } finally {
    assert.equal(await service.stop(), 0);
    await api.close();
  }
});

test("waits for the API when it is not up yet, and refuses to start without a secret", async () => {
  const noSecret = spawn(process.execPath, [INDEX], {
    env: { PATH: process.env.PATH, CONTROLPLANE_API_URL: "http://127.0.0.1:1" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  noSecret.stderr.on("data", (chunk) => (stderr += chunk));
  const [code] = await once(noSecret, "exit");
  assert.equal(code, 2);
  assert.match(stderr, /WEBHOOK_SECRET is required/);

  // Reserve a port, start the service against it, then bring the API up there.
  const probe = http.createServer().listen(0, "127.0.0.1");
  await once(probe, "listening");
  const port = probe.address().port;
  await new Promise((resolve) => probe.close(resolve));
  const starting = startService({ CONTROLPLANE_API_URL: `http://127.0.0.1:${port}` });
  await sleep(700); // at least one refused attempt
  const api = http.createServer((req, res) => {
    res.writeHead(req.method === "POST" ? 201 : 200, { "content-type": "application/json" });
    res.end(JSON.stringify({ id: "late" }));
  });
  api.listen(port, "127.0.0.1");
  const service = await starting;
  try {
    assert.equal(service.integration, "late");
    assert.match(service.stderr(), /retrying/);
  } finally {
    await service.stop();
    await new Promise((resolve) => api.close(resolve));
  }
});
