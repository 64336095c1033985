"""Token shards on disk: layout (where things are and their Arrow schemas), writer (shards and the
manifest, written last), reader, verify (proof a folder is what its manifest says), packing (the
algorithms behind `prep pack`)."""
