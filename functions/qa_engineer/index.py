"""troupe qa_engineer: MetaGPT's QaEngineer: the code in, WriteTest, RunCode (sandboxed) and DebugError out; one OSS-triggered invocation is one turn."""

from shared import sop


def handler(event, context):
    return sop.handler(event, context)
