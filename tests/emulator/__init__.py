"""Tests of the Flux API emulator itself."""
