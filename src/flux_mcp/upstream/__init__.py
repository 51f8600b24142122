"""The AceDataCloud APIs: the Flux and platform clients over one shared call (retries, error answers), credits."""
