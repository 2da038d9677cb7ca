"""The data side: where prepared datasets live (`roots`), their fingerprints (`prepared`), and dataset
helpers shared by task plugins (`datasets`)."""
