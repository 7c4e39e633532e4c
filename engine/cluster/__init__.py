"""Engine replicas on Ray Serve: one engine per replica (`replica`), session affinity (`router`), the studio's
engine interface on the replicas (`client`), starting them (`launch`). Imports ray only here, never below."""
