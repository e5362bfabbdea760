"""``checknumber``: an offline phone-number check, as a plain task service.

A deliberately small stand-in (the full service with carrier, region and time zones comes
with the task-services work): it normalises the number, checks the E.164 shape (a ``+``,
then 8 to 15 digits) and names the country for the calling codes it knows.
Input: ``data.checknumber.number``. Output: ``data.checknumber`` with ``e164``, ``valid``,
``country`` and ``digits``; result ``pass`` for a plausible number, ``fail`` otherwise.
"""

from __future__ import annotations

import re
from typing import Any

from tasksdk import TaskApp, TaskContext, TaskFailed

app = TaskApp("controlplane-examples")

_CALLING_CODES = {
    "1": "US/CA",
    "7": "RU/KZ",
    "20": "EG",
    "27": "ZA",
    "30": "GR",
    "31": "NL",
    "32": "BE",
    "33": "FR",
    "34": "ES",
    "36": "HU",
    "39": "IT",
    "40": "RO",
    "41": "CH",
    "43": "AT",
    "44": "GB",
    "45": "DK",
    "46": "SE",
    "47": "NO",
    "48": "PL",
    "49": "DE",
    "51": "PE",
    "52": "MX",
    "54": "AR",
    "55": "BR",
    "56": "CL",
    "57": "CO",
    "61": "AU",
    "64": "NZ",
    "65": "SG",
    "81": "JP",
    "82": "KR",
    "86": "CN",
    "90": "TR",
    "91": "IN",
    "351": "PT",
    "352": "LU",
    "353": "IE",
    "358": "FI",
    "420": "CZ",
    "421": "SK",
    "972": "IL",
}
_SEPARATORS = re.compile(r"[\s().\-/]")


def check(number: str) -> dict[str, Any]:
    """Describe ``number``; pure, so it is easy to test."""
    compact = _SEPARATORS.sub("", number)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    digits = compact.removeprefix("+")
    valid = compact.startswith("+") and digits.isdigit() and 8 <= len(digits) <= 15
    country = ""
    if valid:
        for length in (3, 2, 1):
            country = _CALLING_CODES.get(digits[:length], "")
            if country:
                break
    return {
        "e164": compact if valid else "",
        "valid": valid and bool(country),
        "country": country,
        "digits": sum(ch.isdigit() for ch in compact),
    }


@app.task("checknumber")
async def checknumber(ctx: TaskContext) -> dict[str, Any]:
    number = ctx.properties.get("number")
    if not isinstance(number, str) or not number.strip():
        raise TaskFailed("data.checknumber.number is missing: send the number to check")
    report = check(number)
    if not report["valid"]:
        return {
            "checknumber": report,
            "result": "fail",
            "message": f"{number!r} is not a valid international phone number",
        }
    return {"checknumber": report, "message": f"{report['e164']} is a {report['country']} number"}
