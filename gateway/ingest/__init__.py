"""The request path: the body parser, who the client is, the site files, the steps and their
executor, the visitor id and the stored row."""
