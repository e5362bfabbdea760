// The few control-plane calls this service makes: register, ping, answer.

import { setTimeout as sleep } from "node:timers/promises";

const REGISTRATION = "/api/controlPlane/v1/uniform/registration";
const REQUEST_TIMEOUT_MS = 10_000;

/** Thrown for an HTTP answer that retrying will not change (a 4xx). */
export class ApiError extends Error {
  constructor(method, path, status, body) {
    super(`${method} ${path}: ${status} ${body}`.trim());
    this.status = status;
  }
}

export function controlPlane({ url, token, log = console.error, retryDelayMs = 500 }) {
  const base = url.replace(/\/+$/, "");

  // One request; resolves {status, body} for any HTTP answer, rejects on network errors.
  async function request(method, path, { json, body, headers = {} } = {}) {
    const res = await fetch(base + path, {
      method,
      headers: {
        ...(json !== undefined ? { "content-type": "application/json" } : {}),
        ...(token ? { "x-token": token } : {}),
        ...headers,
      },
      body: json !== undefined ? JSON.stringify(json) : body,
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const text = await res.text();
    let parsed = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: keep the text for the error message
    }
    return { status: res.status, body: parsed };
  }

  // Retry network errors and 5xx (the control plane says 503 means "send it again");
  // a 2xx is returned, a 4xx is thrown as ApiError at once.
  async function call(method, path, options = {}, attempts = 5) {
    for (let attempt = 1; ; attempt++) {
      let failure;
      try {
        const res = await request(method, path, options);
        if (res.status < 300) return res;
        const message = typeof res.body === "object" ? res.body?.message ?? "" : String(res.body ?? "");
        if (res.status < 500) throw new ApiError(method, path, res.status, message);
        failure = `${res.status} ${message}`;
      } catch (err) {
        if (err instanceof ApiError) throw err;
        failure = err.cause?.code ?? err.message;
      }
      if (attempt >= attempts) throw new Error(`${method} ${path} failed ${attempt} times: ${failure}`);
      const delay = Math.min(retryDelayMs * 2 ** (attempt - 1), 5_000);
      log(`${method} ${path}: ${failure}; retrying in ${delay} ms`);
      await sleep(delay);
    }
  }

  return {
    /** Register; returns {id, created}. Retries for a while, so the API may start later. */
    async register(registration) {
      const res = await call("POST", REGISTRATION, { json: registration }, 10);
      return { id: res.body.id, created: res.status === 201 };
    },

    /** Ping; returns false when the registration is gone (404) and must be made again. */
    async ping(id) {
      const res = await request("PUT", `${REGISTRATION}/${encodeURIComponent(id)}/ping`);
      if (res.status === 404) return false;
      if (res.status >= 300) throw new Error(`ping: ${res.status} ${JSON.stringify(res.body)}`);
      return true;
    },

    async subscriptions(id) {
      return (await call("GET", `${REGISTRATION}/${encodeURIComponent(id)}/subscription`)).body;
    },

    async replaceSubscription(id, subscriptionId, subscription) {
      const path = `${REGISTRATION}/${encodeURIComponent(id)}/subscription/${encodeURIComponent(subscriptionId)}`;
      await call("PUT", path, { json: subscription });
    },

    /** POST one serialized CloudEvent ({headers, body}) to /api/v1/event. */
    async sendEvent(message) {
      await call("POST", "/api/v1/event", { headers: message.headers, body: message.body });
    },
  };
}
