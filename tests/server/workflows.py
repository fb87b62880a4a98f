"""Workflow files that several server and UI test modules commit to their repositories."""

APPROVAL = """
description = "Wait for a human"

[[steps]]
id = "ask"
uses = "wait"
with = { timeout = "1h" }

[[steps]]
id = "after"
uses = "transform"
needs = ["ask"]
with.output = "{{ steps.ask.output.answer }}"

[outputs]
answer = "{{ steps.after.output }}"
"""

FLAKY = """
description = "Fails its second step unless told not to"

[params.fail]
type = "boolean"
default = true

[[steps]]
id = "first"
uses = "transform"
with.output = "done"

[[steps]]
id = "second"
uses = "fail"
needs = ["first"]
if = "params.fail"
with = { message = "second failed on purpose" }
"""
