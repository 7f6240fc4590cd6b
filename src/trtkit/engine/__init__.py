"""Everything that calls ``tensorrt`` / ``tensorrt_rtx``: flavour and version differences, the shared logger,
plugins, deserialization, the builder, profiles, precision, the engine file and its sidecar.
"""
