import { test } from "node:test";
import assert from "node:assert/strict";
import { secretKey, sign, verify } from "../lib/signature.js";

// The example of the Standard Webhooks specification, computed independently of this code.
const SPEC = {
  secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
  id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
  timestamp: "1614265330",
  body: '{"test": 2432232314}',
  signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
};
const key = secretKey(SPEC.secret);
const now = Number(SPEC.timestamp) + 10;
const headers = (overrides = {}) => ({
  "webhook-id": SPEC.id,
  "webhook-timestamp": SPEC.timestamp,
  "webhook-signature": SPEC.signature,
  ...overrides,
});

test("signs like the Standard Webhooks example", () => {
  assert.equal(`v1,${sign(key, SPEC.id, SPEC.timestamp, SPEC.body)}`, SPEC.signature);
});

test("a secret without whsec_ is used as its UTF-8 bytes", () => {
  assert.deepEqual(secretKey("plain-secret-0123456789"), Buffer.from("plain-secret-0123456789"));
  assert.equal(sign(secretKey("plain-secret-0123456789"), "a", "1", "x"), "TZcd4s9q8TaHUrgw6Wm+rKedULWsp7Il+44qdOy4W4I=");
});

test("accepts a good signature, also among several", () => {
  assert.equal(verify(key, headers(), Buffer.from(SPEC.body), now), null);
  const several = `v1,AAAA v1a,whatever ${SPEC.signature}`;
  assert.equal(verify(key, headers({ "webhook-signature": several }), Buffer.from(SPEC.body), now), null);
});

test("rejects a wrong secret", () => {
  const other = secretKey("whsec_" + Buffer.from("another secret, 32 bytes long!!!").toString("base64"));
  assert.equal(verify(other, headers(), Buffer.from(SPEC.body), now), "no valid signature");
  // the same secret taken as UTF-8 instead of base64 is another key
  assert.equal(verify(Buffer.from(SPEC.secret), headers(), Buffer.from(SPEC.body), now), "no valid signature");
});

test("rejects a tampered body or id", () => {
  assert.equal(verify(key, headers(), Buffer.from('{"test": 2432232315}'), now), "no valid signature");
  assert.equal(verify(key, headers({ "webhook-id": "msg_other" }), Buffer.from(SPEC.body), now), "no valid signature");
});

test("rejects timestamps more than 5 minutes away", () => {
  const body = Buffer.from(SPEC.body);
  assert.equal(verify(key, headers(), body, Number(SPEC.timestamp) + 300), null);
  assert.match(verify(key, headers(), body, Number(SPEC.timestamp) + 301), /too far/);
  assert.match(verify(key, headers(), body, Number(SPEC.timestamp) - 301), /too far/);
  // a signature made now with an old timestamp is still refused
  const old = String(Math.floor(Date.now() / 1000) - 600);
  const signature = `v1,${sign(key, SPEC.id, old, body)}`;
  assert.match(verify(key, headers({ "webhook-timestamp": old, "webhook-signature": signature }), body), /too far/);
});

test("rejects missing or malformed headers", () => {
  const body = Buffer.from(SPEC.body);
  assert.match(verify(key, headers({ "webhook-signature": undefined }), body, now), /missing/);
  assert.match(verify(key, headers({ "webhook-timestamp": "soon" }), body, now), /bad webhook-timestamp/);
  assert.equal(verify(key, headers({ "webhook-signature": "v1," }), body, now), "no valid signature");
  assert.equal(verify(key, headers({ "webhook-signature": "v2," + SPEC.signature.slice(3) }), body, now), "no valid signature");
});
