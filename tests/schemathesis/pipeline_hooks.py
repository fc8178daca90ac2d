"""schemathesis hooks for the pipeline API (loaded through SCHEMATHESIS_HOOKS).

NDJSON batches are text: send the generated string as it is, as schemathesis
already does for text/csv.
"""

import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")
