"""From workflow files to runs: validation, the runtime model, templates and the engine."""
