"""The data side: where prepared datasets live (`roots`), their manifests and fingerprints (`prepared`), the
prepare harness (`prepare`), media decoding (`media`), the prepared arrays (`store`), shipped split lists and
validation hold-outs (`splits`), `PreparedTask`, the prepared-data lifecycle written once (`task`) with the checks it
runs (`checks`), generated stand-ins for `--fake-data` (`fake`), and dataset helpers shared by task plugins
(`datasets`)."""
