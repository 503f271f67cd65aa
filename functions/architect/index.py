"""troupe architect: MetaGPT's Architect: the PRD in, WriteDesign (data structures, API, call flow) out; one OSS-triggered invocation is one turn."""

from shared import sop


def handler(event, context):
    return sop.handler(event, context)
