"""The data side: where prepared datasets live (`roots`), their manifests and fingerprints (`prepared`), the
prepare harness (`prepare`), media decoding (`media`), the prepared arrays (`store`), shipped split lists and
validation carving (`splits`), generated stand-ins for `--fake-data` (`fake`), and dataset helpers shared by
task plugins (`datasets`)."""
