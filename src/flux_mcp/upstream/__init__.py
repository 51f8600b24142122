"""The AceDataCloud APIs: the Flux and platform clients over one shared call, and the credits."""
