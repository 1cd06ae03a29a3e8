"""sim: discrete-event simulator and closed-form cost models of local-SGD communication."""
