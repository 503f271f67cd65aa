"""troupe project_manager: MetaGPT's ProjectManager: the design in, WriteTasks (task list, dependencies) out; one OSS-triggered invocation is one turn."""

from shared import sop


def handler(event, context):
    return sop.handler(event, context)
