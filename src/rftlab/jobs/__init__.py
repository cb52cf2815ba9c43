"""One typed job per stage (`base.Job`): the CLI, the study and the demo all build and run these.

Each job lives in a module of its own, so that a job's code (the closure of its module's rftlab imports,
which keys the study's cache) is the code of that stage alone. This file imports none of them.
"""
