"""Server-rendered pages. No business logic here: pages call the services of the other packages."""
