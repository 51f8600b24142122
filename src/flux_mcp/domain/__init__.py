"""Pure data: the model catalogue, task requests and answers, tool arguments, inputs, settings, errors."""
