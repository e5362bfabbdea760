#!/usr/bin/env node
// checknumber-node: a push-mode (webhook) task service for the `checknumber` task.
// Configuration is read from the environment; see README.md.

import os from "node:os";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { controlPlane } from "./lib/controlplane.js";
import { createService, TRIGGERED } from "./lib/service.js";
import { secretKey } from "./lib/signature.js";

const PROGRAM = "checknumber-node";
const { version } = JSON.parse(readFileSync(new URL("./package.json", import.meta.url), "utf8"));
const log = (message) => console.error(`${PROGRAM}: ${message}`);

function fail(message) {
  log(message);
  process.exit(2);
}

function list(value) {
  return (value ?? "")
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean);
}

function readConfig(env) {
  const port = Number(env.PORT || "9001");
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`PORT must be 0 to 65535, not ${env.PORT}`);
  const mode = env.WEBHOOK_MODE || "structured";
  if (!["structured", "binary"].includes(mode)) fail(`WEBHOOK_MODE must be structured or binary, not ${mode}`);
  const pingMs = Number(env.PING_INTERVAL_MS || "10000");
  if (!(pingMs > 0)) fail(`PING_INTERVAL_MS must be a positive number, not ${env.PING_INTERVAL_MS}`);
  if (!env.CONTROLPLANE_API_URL) fail("CONTROLPLANE_API_URL is required (e.g. http://127.0.0.1:8080)");
  // The control plane's rules for a webhook secret, checked here to fail early and clearly.
  const secret = env.WEBHOOK_SECRET ?? "";
  if (secret.length < 16) fail("WEBHOOK_SECRET is required: at least 16 characters, e.g. whsec_<base64>");
  if (secret.startsWith("whsec_") && !/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(secret.slice(6))) {
    fail("WEBHOOK_SECRET starts with whsec_, so the rest must be base64");
  }
  return {
    apiUrl: env.CONTROLPLANE_API_URL,
    token: env.CONTROLPLANE_API_TOKEN || undefined,
    host: env.HOST || "127.0.0.1",
    port,
    publicUrl: env.PUBLIC_URL || undefined,
    secret: env.WEBHOOK_SECRET,
    name: env.SERVICE_NAME || PROGRAM,
    projects: list(env.PROJECTS),
    stages: list(env.STAGES),
    mode,
    pingMs,
    register: env.REGISTER !== "0",
    namespace: env.NAMESPACE || "default",
  };
}

const config = readConfig(process.env);
const api = controlPlane({ url: config.apiUrl, token: config.token, log });

// Deliveries are accepted on /events and, behind a proxy, on the path of PUBLIC_URL.
const paths = ["/events"];
if (config.publicUrl) paths.push(new URL(config.publicUrl).pathname);

const service = createService({
  key: secretKey(config.secret),
  serviceName: config.name,
  sendEvent: (message) => api.sendEvent(message),
  log,
  paths,
});

service.server.listen(config.port, config.host);
await once(service.server, "listening");
const host = config.host.includes(":") ? `[${config.host}]` : config.host;
const localUrl = `http://${host}:${service.server.address().port}/events`;
const webhook = { url: config.publicUrl ?? localUrl, mode: config.mode, secret: config.secret };

async function register() {
  const { id, created } = await api.register({
    name: config.name,
    metadata: {
      hostname: os.hostname(),
      integrationversion: version,
      distributorversion: "",
      location: "remote-execution-plane",
      kubernetesmetadata: { namespace: config.namespace, podname: "", deploymentname: "" },
    },
    subscriptions: [
      {
        event: TRIGGERED,
        filter: { projects: config.projects, stages: config.stages, services: [] },
        webhook,
      },
    ],
  });
  if (!created) await refreshWebhooks(id);
  return id;
}

// A 200 means this id was registered before: the control plane keeps the subscriptions it
// has (so edits made through its API survive a restart) and ignores ours. Our URL or secret
// may have changed since (PORT=0, a new WEBHOOK_SECRET), so point the webhooks of those
// subscriptions at us again, keeping their filters.
async function refreshWebhooks(id) {
  try {
    for (const subscription of await api.subscriptions(id)) {
      if (subscription.event !== TRIGGERED || !subscription.webhook) continue;
      const { event, filter } = subscription;
      await api.replaceSubscription(id, subscription.id, { event, filter, webhook });
    }
  } catch (err) {
    log(`could not update the webhook of registration ${id}: ${err.message}`);
  }
}

let integrationId = "none";
let pinger;
if (config.register) {
  try {
    integrationId = await register();
  } catch (err) {
    log(`registration failed: ${err.message}`);
    process.exit(1);
  }
  let busy = false;
  pinger = setInterval(async () => {
    if (busy) return;
    busy = true;
    try {
      if (!(await api.ping(integrationId))) {
        log(`registration ${integrationId} is gone (expired or deleted): registering again`);
        integrationId = await register();
      }
    } catch (err) {
      log(`ping: ${err.message}`);
    } finally {
      busy = false;
    }
  }, config.pingMs);
}

console.log(`${PROGRAM} listening on ${localUrl} (integration ${integrationId})`);

// On SIGTERM/SIGINT: take no new deliveries, but finish the tasks already accepted (a
// .started without its .finished would keep a sequence waiting), for at most 10 seconds.
// The registration is kept: a restart reuses its id, and it expires if we do not return.
async function shutdown(signal) {
  log(`${signal}: finishing`);
  clearInterval(pinger);
  service.server.close();
  service.server.closeIdleConnections();
  await Promise.race([service.idle(), sleep(10_000)]);
  process.exit(0);
}
process.once("SIGTERM", shutdown);
process.once("SIGINT", shutdown);
