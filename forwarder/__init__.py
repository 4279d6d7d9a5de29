"""openai-audit-forwarder: collect the OpenAI organization audit log, map it, forward it."""

__version__ = "0.1.0"
# The command's name, in messages that tell the user what to run next.
PROG = "openai-audit-forwarder"
