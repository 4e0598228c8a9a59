output "template" {
  description = "The template's name, as the launcher's config names it."
  value       = libvirt_domain_template.agent.name
}

output "version" {
  description = "The image build the template uses."
  value       = data.libvirt_image_build.image.version
}
