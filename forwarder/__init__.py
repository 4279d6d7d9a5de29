"""openai-audit-forwarder: collect the OpenAI organization audit log, map it, forward it."""

__version__ = "0.1.0"
