"""troupe product_manager: MetaGPT's ProductManager: the idea in, PrepareDocuments + WritePRD out; one OSS-triggered invocation is one turn."""

from shared import sop


def handler(event, context):
    return sop.handler(event, context)
