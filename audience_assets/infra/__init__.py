"""The AWS side as code: the CloudFormation stack generated from the project's configuration (`stack`), the
command that deploys it (`deploy`), and the provisioner that applies it to stand-ins (`provision`). Nothing here
is hand-written per deployment: bucket layouts, table schemas, analysis rules and templates, and the actions the
roles allow all come from the code that uses them."""
