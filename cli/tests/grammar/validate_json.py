"""Checks pagoda's constrained outputs with the `jsonschema` package.

Usage: validate_json.py CASES.json

CASES.json is a list of {"case": name, "schema": {...}, "output": "text"}. Each output must
parse as JSON and validate against its schema (Draft 2020-12, with format checking off, as
llguidance does not constrain formats here). One line per case, then "N of M valid".
Exit status 0 when all are valid, 1 otherwise.
"""

import json
import sys

import jsonschema


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    valid = 0
    for c in cases:
        name = c["case"]
        try:
            value = json.loads(c["output"])
        except json.JSONDecodeError as e:
            print(f"FAIL {name}: not JSON ({e}): {c['output']!r}")
            continue
        validator = jsonschema.Draft202012Validator(c["schema"])
        errors = sorted(validator.iter_errors(value), key=str)
        if errors:
            print(f"FAIL {name}: {errors[0].message}: {c['output']!r}")
            continue
        valid += 1
        print(f"ok   {name}: {c['output']}")
    print(f"{valid} of {len(cases)} valid")
    return 0 if valid == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
