"""troupe engineer: MetaGPT's Engineer: the tasks in, WriteCode (+ WriteCodeReview) and SummarizeCode out; one OSS-triggered invocation is one turn."""

from shared import sop


def handler(event, context):
    return sop.handler(event, context)
