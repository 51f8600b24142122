"""Pure data: the model catalogue, requests and task answers, each tool's arguments, input parsing, settings, the error tree."""
