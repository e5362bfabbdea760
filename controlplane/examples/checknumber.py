"""``checknumber``: an offline phone-number check with Google's libphonenumber data.

The task reads ``data.checknumber.number`` (a string; an integer is accepted and read as its
digits) and, for numbers written without a leading ``+``, ``data.checknumber.defaultRegion``
(an ISO 3166 alpha-2 code such as ``CH``). It answers with ``data.checknumber``, whose keys
are a contract: a Node.js implementation of the same task returns exactly the same ones, so
a sequence does not care which of the two answered.

=======================  =================================================================
key                      value
=======================  =================================================================
``number``               the input as given, as a string
``valid``                bool: the number exists in the numbering plan (``is_valid_number``)
``possible``             bool: its length fits the plan (``is_possible_number``)
``e164``                 ``"+41446681800"``; null when the input could not be parsed
``international``        ``"+41 44 668 18 00"``; null when the input could not be parsed
``country``              region code such as ``"CH"``; null when unknown or for
                         non-geographic numbers (``+800``, ...)
``countryCallingCode``   int such as ``41``; null when the input could not be parsed
``region``               geographic description such as ``"Zurich"``; null when unknown
``carrier``              original carrier such as ``"Swisscom"``; null when unknown
``numberType``           libphonenumber's type name (``FIXED_LINE``, ``MOBILE``,
                         ``FIXED_LINE_OR_MOBILE``, ``TOLL_FREE``, ``PREMIUM_RATE``,
                         ``SHARED_COST``, ``VOIP``, ``PERSONAL_NUMBER``, ``PAGER``, ``UAN``,
                         ``VOICEMAIL``); null when unknown
``timeZones``            list of tz names such as ``["Europe/Zurich"]``; ``[]`` when unknown
=======================  =================================================================

``e164`` and ``international`` are the parsed digits written in those formats; for a parsed
but invalid number they do not promise that the number exists.

Outcomes: a valid number passes. A number that parses but is not valid fails (status
``succeeded``) with the message ``<number> is not a valid phone number`` and the fields
filled as far as they are known. Input that is not a phone number at all fails with the
parser's reason and empty fields. A missing ``number`` fails with a message saying what to
send.

``controlplane up`` serves this task from the ``controlplane-examples`` app in
:mod:`controlplane.examples.services`; ``app`` here is that same app, kept because the
local mode starts it as ``checknumber.app``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

import phonenumbers
from phonenumbers import carrier, geocoder, timezone

from tasksdk import TaskContext, TaskFailed

if TYPE_CHECKING:
    from tasksdk import TaskApp

MISSING_NUMBER = (
    "checknumber needs data.checknumber.number (a phone number such as +41 44 668 18 00)"
)
_LANGUAGE = "en"
_UNKNOWN_TIME_ZONE = "Etc/Unknown"
_PARSE_REASONS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: (
        "no valid country calling code (start with + and the calling code,"
        " or give data.checknumber.defaultRegion)"
    ),
    phonenumbers.NumberParseException.NOT_A_NUMBER: "it does not look like a phone number",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: (
        "too short after the international dialling prefix"
    ),
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short to be a phone number",
    phonenumbers.NumberParseException.TOO_LONG: "too long to be a phone number",
}


class NumberReport(TypedDict):
    """The output under ``data.checknumber``; the keys are shared with other implementations."""

    number: str
    valid: bool
    possible: bool
    e164: str | None
    international: str | None
    country: str | None
    countryCallingCode: int | None
    region: str | None
    carrier: str | None
    numberType: str | None
    timeZones: list[str]


def check_number(ctx: TaskContext) -> dict[str, Any]:
    """Handle the ``checknumber`` task: describe the number and pass only if it is valid.

    A sync handler on purpose: the first lookups of a region import libphonenumber's metadata
    modules, and the SDK runs sync handlers in a worker thread, off the event loop.

    Args:
        ctx: The task run; its properties hold ``number`` and optionally ``defaultRegion``.

    Returns:
        ``{"checknumber": NumberReport}`` and a message, for a valid number.

    Raises:
        TaskFailed: For missing or malformed input (no report), or for input that is not a
            phone number or not a valid one (with the report, as far as known, under
            ``checknumber``).
    """
    number, default_region = read_input(ctx.properties)
    try:
        parsed = phonenumbers.parse(number, default_region)
    except phonenumbers.NumberParseException as exc:
        reason = _PARSE_REASONS.get(exc.error_type, str(exc))
        raise TaskFailed(
            f"{number!r} is not a phone number: {reason}",
            data={"checknumber": unparsed_report(number)},
        ) from None
    report = describe(number, parsed)
    if not report["valid"]:
        raise TaskFailed(f"{number} is not a valid phone number", data={"checknumber": report})
    kind = (report["numberType"] or "phone").lower().replace("_", " ")
    where = f" in {report['country']}" if report["country"] else ""
    return {
        "checknumber": report,
        "message": f"{report['international']} is a valid {kind} number{where}",
    }


def read_input(properties: Mapping[str, Any]) -> tuple[str, str | None]:
    """Read and check the task input, so that bad input fails with a useful message.

    Args:
        properties: ``data.checknumber`` of the triggered event.

    Returns:
        The number as a string and the upper-cased default region, if one was given.

    Raises:
        TaskFailed: If the number is missing or not a string or integer, or the default
            region is not a region code libphonenumber knows.
    """
    raw = properties.get("number")
    # bool is an int, but True is no phone number.
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw.strip():
        raise TaskFailed(MISSING_NUMBER)
    region = properties.get("defaultRegion")
    if region is None:
        return raw, None
    if not isinstance(region, str) or region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise TaskFailed(
            f"data.checknumber.defaultRegion {region!r} is not a region code"
            " (ISO 3166 alpha-2, such as CH)"
        )
    return raw, region.upper()


def describe(number: str, parsed: phonenumbers.PhoneNumber) -> NumberReport:
    """Describe a parsed number with every field libphonenumber knows offline.

    Args:
        number: The input as given, echoed back so a caller can match answers to inputs.
        parsed: The parsed number.

    Returns:
        The report; fields libphonenumber cannot tell are null (or ``[]``).
    """
    number_type = phonenumbers.number_type(parsed)
    zones = [zone for zone in timezone.time_zones_for_number(parsed) if zone != _UNKNOWN_TIME_ZONE]
    return {
        "number": number,
        "valid": phonenumbers.is_valid_number(parsed),
        "possible": phonenumbers.is_possible_number(parsed),
        "e164": phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
        "international": phonenumbers.format_number(
            parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL
        ),
        "country": _country(parsed),
        "countryCallingCode": parsed.country_code,
        "region": geocoder.description_for_number(parsed, _LANGUAGE) or None,
        "carrier": carrier.name_for_number(parsed, _LANGUAGE) or None,
        "numberType": (
            None
            if number_type == phonenumbers.PhoneNumberType.UNKNOWN
            else phonenumbers.PhoneNumberType.to_string(number_type)
        ),
        "timeZones": zones,
    }


def _country(parsed: phonenumbers.PhoneNumber) -> str | None:
    # libphonenumber names non-geographic numbers (+800, +882, ...) region "001"; that is
    # not a country, and other implementations (libphonenumber-js) report none for them.
    region = phonenumbers.region_code_for_number(parsed)
    return region if region and region.isalpha() else None


def unparsed_report(number: str) -> NumberReport:
    """The report for input that is not a phone number: nothing is known about it.

    Args:
        number: The input as given.

    Returns:
        A report with every field null, false or empty.
    """
    return {
        "number": number,
        "valid": False,
        "possible": False,
        "e164": None,
        "international": None,
        "country": None,
        "countryCallingCode": None,
        "region": None,
        "carrier": None,
        "numberType": None,
        "timeZones": [],
    }


def __getattr__(name: str) -> TaskApp:
    # `controlplane up` serves `checknumber.app`; the app itself lives in `services`, which
    # imports this module, so it is looked up on first use instead of imported here.
    if name == "app":
        from controlplane.examples.services import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
