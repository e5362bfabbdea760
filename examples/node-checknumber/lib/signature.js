// Standard Webhooks signatures, as the control plane sends them (docs/integrations.md):
//   webhook-signature: v1,<base64 of HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>

import { createHmac, timingSafeEqual } from "node:crypto";

export const TOLERANCE_SECONDS = 5 * 60;

/** The HMAC key for a secret: `whsec_<base64>` is decoded, anything else is used as UTF-8. */
export function secretKey(secret) {
  return secret.startsWith("whsec_")
    ? Buffer.from(secret.slice("whsec_".length), "base64")
    : Buffer.from(secret, "utf8");
}

/** The base64 signature of one delivery; body is the raw bytes (Buffer) or a string. */
export function sign(key, id, timestamp, body) {
  return createHmac("sha256", key)
    .update(`${id}.${timestamp}.`)
    .update(body)
    .digest("base64");
}

/**
 * Check the three webhook-* headers against the raw body.
 * Returns null when the delivery is authentic, else a short reason for the 401.
 */
export function verify(key, headers, body, nowSeconds = Math.floor(Date.now() / 1000)) {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"];
  const signatures = headers["webhook-signature"];
  if (!id || !timestamp || !signatures) return "missing webhook-id, webhook-timestamp or webhook-signature";
  if (!/^\d+$/.test(timestamp)) return "bad webhook-timestamp";
  if (Math.abs(nowSeconds - Number(timestamp)) > TOLERANCE_SECONDS) return "webhook-timestamp too far from now";

  const expected = Buffer.from(sign(key, id, timestamp, body), "base64");
  // Several signatures may be sent (e.g. while the secret is rotated); one match is enough.
  for (const entry of signatures.split(" ")) {
    const [version, value] = entry.split(",", 2);
    if (version !== "v1" || !value) continue;
    const given = Buffer.from(value, "base64");
    // timingSafeEqual throws on different lengths; the length of an HMAC is no secret.
    if (given.length === expected.length && timingSafeEqual(given, expected)) return null;
  }
  return "no valid signature";
}
