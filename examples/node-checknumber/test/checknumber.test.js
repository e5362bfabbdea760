import { test } from "node:test";
import assert from "node:assert/strict";
import { checkNumber, MISSING_MESSAGE } from "../lib/checknumber.js";

// The keys of the Python service's output, in its order.
const KEYS = [
  "number", "valid", "possible", "e164", "international", "country",
  "countryCallingCode", "region", "carrier", "numberType", "timeZones",
];

test("a Zurich fixed line passes", async () => {
  const outcome = await checkNumber({ number: "+41 44 668 18 00" });
  assert.deepEqual(outcome, {
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
  assert.deepEqual(Object.keys(outcome.checknumber), KEYS);
});

test("a Swiss mobile number names its carrier and the country as region", async () => {
  const { status, result, checknumber } = await checkNumber({ number: "+41 79 123 45 67" });
  assert.equal(status, "succeeded");
  assert.equal(result, "pass");
  assert.deepEqual(checknumber, {
    number: "+41 79 123 45 67",
    valid: true,
    possible: true,
    e164: "+41791234567",
    international: "+41 79 123 45 67",
    country: "CH",
    countryCallingCode: 41,
    region: "Switzerland",
    carrier: "Swisscom",
    numberType: "MOBILE",
    timeZones: ["Europe/Zurich"],
  });
});

test("a national number needs defaultRegion", async () => {
  const withRegion = await checkNumber({ number: "044 668 18 00", defaultRegion: "ch" });
  assert.equal(withRegion.result, "pass");
  assert.equal(withRegion.checknumber.e164, "+41446681800");
  assert.equal(withRegion.checknumber.number, "044 668 18 00");

  const without = await checkNumber({ number: "044 668 18 00" });
  assert.equal(without.result, "fail");
  assert.match(without.message, /"044 668 18 00".*country is unknown/);
});

test("a number given as a JSON number is read as its digits", async () => {
  const { result, checknumber } = await checkNumber({ number: 41446681800, defaultRegion: "CH" });
  assert.equal(result, "pass"); // the leading 41 is taken as CH's calling code, as in libphonenumber
  assert.equal(checknumber.number, "41446681800");
  assert.equal(checknumber.e164, "+41446681800");
});

test("a parsed but invalid number fails with what is known", async () => {
  const outcome = await checkNumber({ number: "+41 12" });
  assert.deepEqual(outcome, {
    status: "succeeded",
    result: "fail",
    message: "+41 12 is not a valid phone number",
    checknumber: {
      number: "+41 12",
      valid: false,
      possible: false,
      e164: "+4112",
      international: "+41 12",
      country: "CH",
      countryCallingCode: 41,
      region: null,
      carrier: null,
      numberType: null,
      timeZones: [],
    },
  });
});

test("garbage fails with the input and the reason", async () => {
  const outcome = await checkNumber({ number: "garbage" });
  assert.equal(outcome.status, "succeeded");
  assert.equal(outcome.result, "fail");
  assert.equal(outcome.message, 'cannot read "garbage" as a phone number: it does not look like a phone number');
  assert.deepEqual(outcome.checknumber, {
    number: "garbage",
    valid: false,
    possible: false,
    e164: null,
    international: null,
    country: null,
    countryCallingCode: null,
    region: null,
    carrier: null,
    numberType: null,
    timeZones: [],
  });
});

test("an unknown defaultRegion is a failed check, not an error", async () => {
  const outcome = await checkNumber({ number: "044 668 18 00", defaultRegion: "XX" });
  assert.equal(outcome.status, "succeeded");
  assert.equal(outcome.result, "fail");
  assert.match(outcome.message, /defaultRegion "XX" is unknown/);
});

test("a missing number fails with a hint", async () => {
  for (const input of [undefined, {}, { number: "" }, { number: "   " }, { number: null }, { number: {} }]) {
    const outcome = await checkNumber(input);
    assert.equal(outcome.status, "succeeded");
    assert.equal(outcome.result, "fail");
    assert.equal(outcome.message, MISSING_MESSAGE);
    assert.equal(outcome.checknumber, undefined);
  }
});
