// Every template a test builds goes through the ASL checks: each state machine's definition is validated by
// asl-validator and for its query languages (test/support/asl-validate.ts). A test that synthesizes an invalid
// definition fails where it builds the template.
import { Template } from 'aws-cdk-lib/assertions';
import { validateTemplate } from './support/asl-validate';

const fromStack = Template.fromStack.bind(Template);
const fromJSON = Template.fromJSON.bind(Template);
Object.assign(Template, {
  fromStack: (...args: Parameters<typeof Template.fromStack>) => {
    const template = fromStack(...args);
    validateTemplate(template.toJSON());
    return template;
  },
  fromJSON: (...args: Parameters<typeof Template.fromJSON>) => {
    const template = fromJSON(...args);
    validateTemplate(template.toJSON());
    return template;
  },
});
