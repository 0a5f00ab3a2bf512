"""Networks only (nn.Module); losses and metrics live in the policies."""
